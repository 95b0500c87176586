"""tokenalign inside verl: the reward manager and advantage estimators, fetched by name from
verl's own registries and run on verl's DataProto batches (tiny tensors, CPU)."""

from __future__ import annotations

import asyncio

import pytest
import torch

pytest.importorskip("verl")

from omegaconf import OmegaConf  # noqa: E402  (a verl dependency)
from verl import DataProto  # noqa: E402
from verl.experimental.reward_loop.reward_manager import get_reward_manager_cls  # noqa: E402
from verl.trainer.ppo.core_algos import get_adv_estimator_fn  # noqa: E402
from verl.workers.reward_manager import get_reward_manager_cls as get_batch_reward_manager_cls  # noqa: E402

import tokenalign.integrations.verl  # noqa: E402,F401  (registers with verl)
from tokenalign.objectives.advantages import gae, reward_to_go, whiten  # noqa: E402
from tokenalign.policy.rewards import BlameReward, TokenModelReward  # noqa: E402
from tokenalign.rewards.model import TokenRewardHeadConfig, TokenRewardModel  # noqa: E402
from tokenalign.scorers.base import as_scorer  # noqa: E402


def verl_batch(tokenizer, prompts: list[list[int]], responses: list[list[int]]) -> DataProto:
    """A verl rollout batch: prompts left-padded, responses right-padded, one attention mask."""
    pad = tokenizer.pad_token_id
    p_len, r_len = max(map(len, prompts)), max(map(len, responses)) + 1  # one padding column at least
    rows_p, rows_r, masks = [], [], []
    for p, r in zip(prompts, responses):
        rows_p.append([pad] * (p_len - len(p)) + p)
        rows_r.append(r + [pad] * (r_len - len(r)))
        masks.append([0] * (p_len - len(p)) + [1] * len(p) + [1] * len(r) + [0] * (r_len - len(r)))
    return DataProto.from_dict(tensors={"prompts": torch.tensor(rows_p), "responses": torch.tensor(rows_r),
                                        "attention_mask": torch.tensor(masks)})


def per_token_reward(prompts, completions, completion_ids, **kwargs):
    """A TRL-style reward function with dense rewards: token k of a completion gets k + 1."""
    return [[float(k + 1) for k in range(len(ids))] for ids in completion_ids]


def span_reward(prompts, completions, **kwargs):
    """A reward function that blames a completion's last character with reward -1."""
    return [{"reward": -1.0, "spans": [[len(c) - 1, len(c)]]} if c else 0.0 for c in completions]


def ids(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


@pytest.fixture()
def rows(tiny_tokenizer):
    eos = tiny_tokenizer.eos_token_id
    prompts = [ids(tiny_tokenizer, "def add(a, b):\n"), ids(tiny_tokenizer, "import os\n")]
    responses = [ids(tiny_tokenizer, "    return a + b\n") + [eos], ids(tiny_tokenizer, "print(os.path)")]
    return prompts, responses


def test_reward_manager_places_dense_rewards_on_tokens(tiny_tokenizer, rows):
    prompts, responses = rows
    data = verl_batch(tiny_tokenizer, prompts, responses)
    config = OmegaConf.create({"reward": {"reward_kwargs": {"source": "blame", "scale": 2.0}}})
    cls = get_reward_manager_cls("tokenalign")
    assert get_batch_reward_manager_cls("tokenalign") is cls
    # settings from the config (as a Hydra run gives them) and from keyword arguments
    manager = cls(config=config, tokenizer=tiny_tokenizer, compute_score=None, scorer=per_token_reward)

    scores = manager(data)
    assert scores.shape == data.batch["responses"].shape
    expected = torch.zeros_like(scores)
    for i, r in enumerate(responses):  # each generated token (EOS included) gets 2 x (k + 1)
        expected[i, : len(r)] = 2.0 * torch.arange(1, len(r) + 1, dtype=torch.float32)
    torch.testing.assert_close(scores, expected)

    out = manager(data, return_dict=True)
    assert out["reward_extra_info"]["tokenalign_score"] == pytest.approx(expected.sum(dim=1).tolist())
    single = asyncio.run(manager.run_single(data[1:2]))  # verl's reward loop: one trajectory's total
    assert single["reward_score"] == pytest.approx(float(expected[1].sum()))


def test_reward_manager_blame_matches_tokenalign_blame_source(tiny_tokenizer, rows):
    """Blamed spans land where tokenalign's own `reward.source: blame` puts them."""
    prompts, responses = rows
    data = verl_batch(tiny_tokenizer, prompts, responses)
    manager = get_reward_manager_cls("tokenalign")(tokenizer=tiny_tokenizer, source="blame", scorer=span_reward)
    scores = manager.token_level_scores(data)

    samples = tokenalign.integrations.verl.batch_samples(data, tiny_tokenizer)
    assert [s.generated_ids for s in samples] == responses
    own = BlameReward(as_scorer(span_reward), 1.0, None, tiny_tokenizer)(samples).token_rewards
    for i, row in enumerate(own):
        torch.testing.assert_close(scores[i, : len(row)], torch.tensor(row, dtype=torch.float32))
        assert scores[i, len(row):].abs().sum() == 0
    # by hand: the -1 sits on the token holding the completion's last character ("\n" of
    # row 0, before its EOS; ")" of row 1, its last token)
    last_char_token = [len(responses[0]) - 2, len(responses[1]) - 1]
    for i, j in enumerate(last_char_token):
        assert scores[i, j] == pytest.approx(-1.0)
        assert scores[i].sum() == pytest.approx(-1.0)


def test_reward_manager_token_model_folder(tiny_tokenizer, rows, tmp_path):
    """A trained token reward model folder (what `tokenalign reward` writes, and what a PG
    loop's guidance is) gives tokenalign's TokenModelReward values."""
    from transformers import GPT2Config, GPT2Model

    torch.manual_seed(0)
    cfg = GPT2Config(vocab_size=len(tiny_tokenizer), n_embd=32, n_layer=2, n_head=2, n_positions=128)
    model = TokenRewardModel(GPT2Model(cfg), TokenRewardHeadConfig(hidden_size=16, init_gain=1.0, bounding="identity"))
    model.save_pretrained(tmp_path / "rm", tokenizer=tiny_tokenizer)

    prompts, responses = rows
    data = verl_batch(tiny_tokenizer, prompts, responses)
    config = OmegaConf.create({"reward": {"reward_kwargs": {"source": "token_model", "model": str(tmp_path / "rm")}}})
    manager = get_reward_manager_cls("tokenalign")(config=config, tokenizer=tiny_tokenizer, compute_score=None)
    scores = manager.token_level_scores(data)

    samples = tokenalign.integrations.verl.batch_samples(data, tiny_tokenizer)
    own = TokenModelReward(TokenRewardModel.from_pretrained(tmp_path / "rm"), tiny_tokenizer, tiny_tokenizer)(samples)
    for i, row in enumerate(own.token_rewards):
        torch.testing.assert_close(scores[i, : len(row)], torch.tensor(row, dtype=torch.float32))
    assert scores.abs().sum() > 0


def test_reinforce_estimator_is_reward_to_go(tiny_tokenizer):
    fn = get_adv_estimator_fn("tokenalign_reinforce")
    rewards = torch.tensor([[1.0, 2.0, 3.0, 9.0], [0.0, 0.0, 1.0, 4.0]])
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]])
    config = OmegaConf.create({"gamma": 0.5, "tokenalign_baseline": "none"})
    adv, ret = fn(token_level_rewards=rewards, response_mask=mask, config=config, index=None)
    # by hand: row 0 = [1 + 0.5*2 + 0.25*3, 2 + 0.5*3, 3, 0 (padding)]
    expected = torch.tensor([[2.75, 3.5, 3.0, 0.0], [0.25 + 0.5, 0.5 + 1.0, 1.0 + 2.0, 4.0]])
    torch.testing.assert_close(ret, expected)
    torch.testing.assert_close(adv, expected)
    torch.testing.assert_close(ret, reward_to_go(rewards, mask, 0.5))

    adv, _ = fn(token_level_rewards=rewards, response_mask=mask, config=OmegaConf.create({"gamma": 1.0}))
    torch.testing.assert_close(adv, whiten(reward_to_go(rewards, mask), mask))  # default baseline: whiten


def test_gae_estimator_is_tokenalign_ppo_gae():
    fn = get_adv_estimator_fn("tokenalign_gae")
    torch.manual_seed(0)
    rewards, values = torch.randn(3, 5), torch.randn(3, 5)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [1, 0, 0, 0, 0]])
    config = OmegaConf.create({"gamma": 0.9, "lam": 0.8})
    adv, ret = fn(token_level_rewards=rewards, response_mask=mask, values=values, config=config)
    want_adv, want_ret = gae(whiten(rewards, mask.bool(), shift_mean=False), values, mask.bool(), 0.9, 0.8)
    torch.testing.assert_close(adv, whiten(want_adv, mask.bool()))
    torch.testing.assert_close(ret, want_ret)
    assert adv.shape == (3, 5) and (adv[mask == 0] == 0).all()
    with pytest.raises(ValueError, match="values"):
        fn(token_level_rewards=rewards, response_mask=mask, config=config)


def test_rewards_to_advantages_through_a_verl_batch(tiny_tokenizer, rows):
    """The manager's token_level_scores, carried in the DataProto, through the estimator by name."""
    prompts, responses = rows
    data = verl_batch(tiny_tokenizer, prompts, responses)
    manager = get_reward_manager_cls("tokenalign")(tokenizer=tiny_tokenizer, scorer=per_token_reward)
    data.batch["token_level_rewards"] = manager(data)
    data.batch["response_mask"] = data.batch["attention_mask"][:, data.batch["prompts"].shape[1]:]
    adv, ret = get_adv_estimator_fn("tokenalign_reinforce")(
        token_level_rewards=data.batch["token_level_rewards"], response_mask=data.batch["response_mask"],
        config=OmegaConf.create({"tokenalign_baseline": "none"}))
    n = len(responses[1])  # row 1 has no EOS: rewards 1..n, reward-to-go at k = sum_{j>=k} j
    assert ret[1, :n].tolist() == pytest.approx([sum(range(k, n + 1)) for k in range(1, n + 1)])
    assert (ret[1, n:] == 0).all() and torch.equal(adv, ret)
