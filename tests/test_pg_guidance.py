"""The PG loop's use of the learned guidance, by hand: r_φ's token rewards standardised
per rollout batch, rollouts ranked for r_φ's next round, held-out ranking accuracy."""

from __future__ import annotations

import math

import pytest


def _sample(tok, completion: str, prompt: str = "def f(x):\n"):
    from tokenalign.rollout.generate import Sample

    ids = tok(completion, add_special_tokens=False)["input_ids"]
    return Sample(prompt, completion, ids, True, ids, tok(prompt, add_special_tokens=False)["input_ids"])


def _fake_scores(monkeypatch, rewards_by_text):
    """score_tokens returning hand-made token rewards (one per r_φ token of each text)."""
    import tokenalign.rewards.scoring as scoring
    from tokenalign.rewards.scoring import TokenRewards
    from tokenalign.rollout.batch import response_char_spans

    def fake(model, tokenizer, prompts, responses, batch_size=16, max_length=None):
        out = []
        for r in responses:
            ids = tokenizer(r, add_special_tokens=False)["input_ids"]
            values = rewards_by_text[r]
            spans = response_char_spans(tokenizer, ids, text_length=len(r))
            if len(values) == len(ids) + 1:  # an end token: empty span at the end
                ids, spans = ids + [tokenizer.eos_token_id], spans + [(len(r), len(r))]
            assert len(values) == len(ids)
            out.append(TokenRewards(r, ids, spans, list(values)))
        return out

    monkeypatch.setattr(scoring, "score_tokens", fake)


@pytest.mark.parametrize("normalize", ["none", "center", "whiten", "sequence"])
def test_token_model_reward_normalize_by_hand(monkeypatch, normalize):
    from tokenalign.policy.rewards import TokenModelReward
    from tokenalign.tasks.pep8 import load_tokenizer

    tok = load_tokenizer()
    a, b = "    pass\n", "    return x\n"  # 3 and 4 tokens
    _fake_scores(monkeypatch, {a: [0.5, 0.7, 0.6], b: [0.2, 0.5, 0.4, 0.6]})
    out = TokenModelReward(None, tok, tok, "sum", normalize=normalize)([_sample(tok, a), _sample(tok, b)])
    # the 7 values: mean 0.5; squared deviations sum to 0.16, unbiased variance 0.16 / 6
    shift = 0.0 if normalize == "none" else 0.5
    div = math.sqrt(0.16 / 6) if normalize == "whiten" else 1.0
    if normalize == "sequence":
        # centred sums: 1.8 - 1.5 = 0.3 and 1.7 - 2.0 = -0.3; their std (unbiased) is sqrt(0.18)
        div = math.sqrt(0.18)
    assert out.token_rewards[0] == pytest.approx([(v - shift) / div for v in (0.5, 0.7, 0.6)])
    assert out.token_rewards[1] == pytest.approx([(v - shift) / div for v in (0.2, 0.5, 0.4, 0.6)])
    assert out.scores == pytest.approx([1.8, 1.7])  # sequence scores stay the raw aggregates
    for how, want in (("avg", [0.6, 0.425]), ("last", [0.6, 0.6])):
        got = TokenModelReward(None, tok, tok, how, scale=2.0)([_sample(tok, a), _sample(tok, b)]).scores
        assert got == pytest.approx([2.0 * w for w in want])  # last: a sequence reward model's one score
    # a sequence reward model's scores normalised as the token arm's sample totals are
    c = "    yield x\n"
    _fake_scores(monkeypatch, {a: [0.5, 0.7, 0.6], b: [0.2, 0.5, 0.4, 0.6], c: [0.1, 0.1, 0.1, 0.9]})
    batch = [_sample(tok, a), _sample(tok, b), _sample(tok, c)]  # last scores 0.6, 0.6, 0.9: mean 0.7, std sqrt(0.03)
    got = TokenModelReward(None, tok, tok, "last", normalize="sequence")(batch).scores
    assert got == pytest.approx([-0.1 / math.sqrt(0.03), -0.1 / math.sqrt(0.03), 0.2 / math.sqrt(0.03)])
    assert TokenModelReward(None, tok, tok, "last", normalize="center")(batch).scores == pytest.approx([-0.1, -0.1, 0.2])


def test_token_model_reward_normalize_leaves_policy_tokens_past_the_text_at_zero(monkeypatch):
    """A sample cut mid-line is scored on its complete lines; the cut tokens get 0 = the batch mean."""
    from tokenalign.policy.rewards import TokenModelReward
    from tokenalign.rollout.generate import Sample
    from tokenalign.tasks.pep8 import complete_lines, load_tokenizer

    tok = load_tokenizer()
    full = "    pass\n    return x"
    ids = tok(full, add_special_tokens=False)["input_ids"]
    cut = Sample("def f(x):\n", full, ids, False, ids, tok("def f(x):\n", add_special_tokens=False)["input_ids"])
    _fake_scores(monkeypatch, {"    pass\n": [1.0, 2.0, 3.0]})
    out = TokenModelReward(None, tok, tok, "sum", text_fn=complete_lines, normalize="center")([cut])
    assert out.token_rewards[0][:3] == pytest.approx([-1.0, 0.0, 1.0])
    assert out.token_rewards[0][3:] == [0.0] * (len(ids) - 3)


def test_normalize_is_rejected_for_wmle():
    from tokenalign.config import from_dict
    from tokenalign.errors import ConfigError
    from tokenalign.policy.config import TrainConfig

    with pytest.raises(ConfigError, match="normalize"):
        from_dict(TrainConfig, {"objective": "wmle", "wmle": {"data": "x"}, "reward": {"source": "token_model", "normalize": "whiten"}})


def test_group_lists_drops_empty_responses_and_all_tied_lists():
    from tokenalign.rewards.ranking import group_ranked_lists

    prompts = ["p"] * 3 + ["q"] * 3 + ["r"] * 3
    texts = ["a", " ", "b", "c", "d", "e", "f", "", ""]
    prefs = [-1.0, -0.5, -0.2, -1.0, -1.0, -1.0, -0.3, -0.1, -0.2]
    lists = group_ranked_lists(prompts, texts, prefs, 3)
    # p: the empty response goes, two remain and differ; q: all tied; r: one response left
    assert len(lists) == 1
    ex, keep = lists[0]
    assert ex.prompt == "p" and ex.responses == ("a", "b") and ex.scores == (-1.0, -0.2) and keep == [0, 2]


def test_pair_accuracy_by_hand():
    from tokenalign.rewards.ranking import pair_accuracy

    rows = [
        # strict pairs: (0>1) right, (0>2) right, (1 vs 2) tied in preference: skipped
        {"scores": [-0.1, -1.0, -1.0], "guidance_scores": [3.0, 1.0, 2.0]},
        # (1>0) wrong, (2>0) wrong, (1>2) tie in score: half
        {"scores": [-1.0, -0.1, -0.5], "guidance_scores": [2.0, 1.0, 1.0]},
    ]
    acc, pairs = pair_accuracy(rows)
    assert pairs == 5 and acc == pytest.approx((1 + 1 + 0 + 0 + 0.5) / 5)
    assert math.isnan(pair_accuracy([{"scores": [-1.0, -1.0], "guidance_scores": [0.0, 1.0]}])[0])


def test_rollout_ranker_records_lists_and_never_feeds_the_preference_to_the_policy(monkeypatch, tmp_path):
    """The policy gets r_φ's rewards only; the gold ranking goes to the file, with r_φ's
    own sequence scores of each list (avg aggregate: Lbar * mean)."""
    import json

    from tokenalign.policy.rollout_ranker import RolloutRanker
    from tokenalign.policy.rewards import TokenModelReward
    from tokenalign.scorers.pep8 import Pep8Scorer
    from tokenalign.tasks.pep8 import complete_lines, load_tokenizer

    tok = load_tokenizer()
    good, bad = "    return x\n", "    return (x\n"  # the second does not tokenize: a failure
    n_good, n_bad = (len(tok(t, add_special_tokens=False)["input_ids"]) for t in (good, bad))
    _fake_scores(monkeypatch, {good: [0.5] * n_good, bad: [1.0] * n_bad})
    inner = TokenModelReward(None, tok, tok, "sum", text_fn=complete_lines)

    class Trainer:
        iteration = 3

    path = tmp_path / "lists.jsonl"
    ranker = RolloutRanker(inner, Pep8Scorer(), complete_lines, 2, path, lambda: Trainer().iteration, "avg", 2.0)
    out = ranker([_sample(tok, good), _sample(tok, bad)])
    assert out.token_rewards == [[0.5] * n_good, [1.0] * n_bad]  # r_φ's, untouched
    assert [r.failed for r in out.details] == [False, True]
    (row,) = [json.loads(x) for x in path.read_text().splitlines()]
    assert row["iteration"] == 3 and row["responses"] == [good, bad]
    assert row["scores"][0] > row["scores"][1] == -1.0
    lbar = (n_good + n_bad) / 2
    assert row["guidance_scores"] == pytest.approx([lbar * 0.5, lbar * 1.0])


def test_end_token_reward_lands_on_the_token_that_ends_the_scored_text(monkeypatch):
    """r_φ with an end token: the end's reward goes to the policy token holding the scored
    text's last character (a cut sample: the newline of its last complete line), or, for an
    empty text, to the last generated token."""
    from types import SimpleNamespace

    from tokenalign.policy.rewards import TokenModelReward
    from tokenalign.rollout.generate import Sample
    from tokenalign.tasks.pep8 import complete_lines, load_tokenizer

    tok = load_tokenizer()
    prompt_ids = tok("def f(x):\n", add_special_tokens=False)["input_ids"]
    full = "    pass\n    return x"  # cut mid-line: scored text "    pass\n" (3 tokens)
    ids = tok(full, add_special_tokens=False)["input_ids"]
    cut = Sample("def f(x):\n", full, ids, False, ids, prompt_ids)
    stop_ids = tok("\n\n\n", add_special_tokens=False)["input_ids"]
    empty = Sample("def f(x):\n", "", stop_ids, True, stop_ids, prompt_ids)
    _fake_scores(monkeypatch, {"    pass\n": [1.0, 2.0, 3.0, -5.0], "": [-7.0]})
    model = SimpleNamespace(head_config=SimpleNamespace(end_token=True))
    out = TokenModelReward(model, tok, tok, "sum", text_fn=complete_lines)([cut, empty])
    assert out.token_rewards[0][:3] == pytest.approx([1.0, 2.0, 3.0 - 5.0])
    assert out.token_rewards[0][3:] == [0.0] * (len(ids) - 3)
    assert out.token_rewards[1] == pytest.approx([0.0] * (len(stop_ids) - 1) + [-7.0])
    assert out.scores == pytest.approx([1.0, -7.0])


def test_group_lists_keeps_empty_responses_when_r_phi_reads_an_end_token():
    from tokenalign.rewards.ranking import group_ranked_lists

    lists = group_ranked_lists(["p", "p"], ["a", ""], [-0.1, -1.0], 2, keep_empty=True)
    assert len(lists) == 1 and lists[0][0].responses == ("a", "") and lists[0][1] == [0, 1]


def test_normalize_does_not_blow_up_a_constant_reward(monkeypatch):
    """An untrained r_φ is constant up to rounding: centring leaves ~0, nothing is scaled up."""
    from tokenalign.policy.rewards import TokenModelReward
    from tokenalign.tasks.pep8 import load_tokenizer

    tok = load_tokenizer()
    a, b = "    pass\n", "    return x\n"
    _fake_scores(monkeypatch, {a: [0.549] * 3, b: [0.549, 0.549, 0.549, 0.549 + 1e-9]})
    for how in ("whiten", "sequence"):
        out = TokenModelReward(None, tok, tok, "sum", normalize=how)([_sample(tok, a), _sample(tok, b)])
        assert max(abs(v) for row in out.token_rewards for v in row) < 1e-8
