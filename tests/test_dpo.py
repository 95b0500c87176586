"""DPO (objective ``dpo``) and RTO's DPO token reward (reward source ``dpo``): the loss on
hand-computed numbers, learning on a tiny GPT-2, the reward on hand-checkable values, and
both through ``tokenalign train`` end to end."""

from __future__ import annotations

import json
import math

import pytest
import torch

from conftest import CHAT_TEMPLATE, build_tiny_lm, build_tiny_tokenizer
from tokenalign.errors import ConfigError
from tokenalign.objectives.dpo import DPO, DPOSettings
from tokenalign.objectives.losses import dpo_loss, sequence_logprobs
from tokenalign.policy.config import TrainConfig
from tokenalign.policy.rewards import DPOTokenReward, dpo_token_rewards
from tokenalign.policy.trainer import PolicyTrainer
from tokenalign.rollout.generate import SamplingSettings

PAIRS = [
    {"prompt": "def add(a, b):\n", "chosen": "    return a + b\n", "rejected": "    print(os)"},
    {"prompt": "x = ", "chosen": "1 + 2", "rejected": "import sys"},
    {"prompt": "class Point:\n", "chosen": "    def __init__(self, x, y):", "rejected": "the lazy dog"},
    {"prompt": "import os", "chosen": "\nimport sys\n", "rejected": " brown fox"},
]


def write_pairs(path, rows=PAIRS):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_dpo_loss_on_hand_computed_values():
    # pair 0: chosen log-ratio +1, rejected -1, β 0.5 -> h = 1; pair 1: equal log-ratios -> h = 0
    pc, pr = torch.tensor([-1.0, -2.0]), torch.tensor([-3.0, -4.0])
    rc, rr = torch.tensor([-2.0, -3.0]), torch.tensor([-2.0, -3.0])
    losses, chosen, rejected = dpo_loss(pc, pr, rc, rr, beta=0.5)
    torch.testing.assert_close(chosen, torch.tensor([0.5, 0.5]))
    torch.testing.assert_close(rejected, torch.tensor([-0.5, -0.5]))
    torch.testing.assert_close(losses, torch.tensor([math.log(1 + math.exp(-1.0)), math.log(1 + math.exp(-1.0))]))
    losses, _, _ = dpo_loss(torch.tensor([-1.0]), torch.tensor([-1.0]), torch.tensor([-1.0]), torch.tensor([-1.0]))
    torch.testing.assert_close(losses, torch.tensor([math.log(2.0)]))
    # cDPO, ε 0.1, h = 1: 0.9 log(1 + e^-1) + 0.1 log(1 + e) = log(1 + e^-1) + 0.1
    losses, _, _ = dpo_loss(pc[:1], pr[:1], rc[:1], rr[:1], beta=0.5, label_smoothing=0.1)
    torch.testing.assert_close(losses, torch.tensor([math.log(1 + math.exp(-1.0)) + 0.1]))
    # sequence log-probs sum the real response tokens only
    lp = torch.tensor([[-1.0, -2.0, -9.0], [-0.5, -9.0, -9.0]])
    mask = torch.tensor([[True, True, False], [True, False, False]])
    torch.testing.assert_close(sequence_logprobs(lp, mask), torch.tensor([-3.0, -0.5]))


def test_dpo_loss_gradient_is_the_papers():
    """∂L/∂ log π(y_w) = -β σ(-h): DPO weighs each pair by how wrong its implicit reward is."""
    pc = torch.tensor([-1.0], requires_grad=True)
    losses, _, _ = dpo_loss(pc, torch.tensor([-3.0]), torch.tensor([-2.0]), torch.tensor([-2.0]), beta=0.5)
    losses.sum().backward()
    torch.testing.assert_close(pc.grad, torch.tensor([-0.5 * torch.sigmoid(torch.tensor(-1.0)).item()]))


def test_dpo_token_rewards_are_the_scaled_log_ratio_with_a_clip():
    dpo = torch.tensor([[-1.0, -2.0, -3.0]])
    ref = torch.tensor([[-2.0, -2.0, -1.0]])
    mask = torch.tensor([[True, True, False]])
    torch.testing.assert_close(dpo_token_rewards(dpo, ref, mask, beta=0.1), torch.tensor([[0.1, 0.0, 0.0]]))
    torch.testing.assert_close(dpo_token_rewards(dpo, ref, torch.ones_like(mask), beta=0.1, clip=0.05),
                               torch.tensor([[0.05, 0.0, -0.05]]))


def _config(data, **kw) -> TrainConfig:
    base = dict(objective="dpo", iterations=8, prompts_per_iteration=4, lr=1e-2, mixed_precision="no", save_every=0,
                sampling=SamplingSettings(max_new_tokens=8), objective_settings=DPOSettings(data=str(data), beta=0.5),
                progress=False)
    base.update(kw)
    return TrainConfig(**base)


def _trainer(cfg, tok):
    policy = build_tiny_lm(tok)
    data = DPO.training_data(cfg, None, tok, policy)
    return PolicyTrainer(cfg, policy, tok, lambda samples: None, [], ref_policy=build_tiny_lm(tok), data=data)


def test_dpo_learns_the_chosen_responses(tiny_tokenizer, tmp_path):
    """A few steps raise the chosen responses' log-ratio margin over the rejected ones."""
    trainer = _trainer(_config(write_pairs(tmp_path / "pairs.jsonl")), tiny_tokenizer)
    rows = trainer.fit()
    assert rows[0]["rewards_margins"] == pytest.approx(0.0, abs=1e-6)  # the policy starts as its reference
    assert rows[0]["loss"] == pytest.approx(math.log(2.0), abs=1e-5)
    assert rows[-1]["rewards_margins"] > 1.0 and rows[-1]["rewards_accuracies"] == 1.0
    assert rows[-1]["loss"] < 0.3
    assert rows[-1]["logps_chosen"] > rows[0]["logps_chosen"]
    assert "kl" not in rows[-1]  # the batch is the dataset's, not the policy's samples


def test_pairs_with_chat_prompts_are_rendered_and_cut_to_the_context(tmp_path):
    from tokenalign.data import load_records
    from tokenalign.objectives.dpo import tokenize_pairs

    tok = build_tiny_tokenizer()
    tok.chat_template = CHAT_TEMPLATE
    rows = [{"prompt": [{"role": "user", "content": "add"}], "chosen": "a + b", "rejected": "a+b"}]
    records = load_records(write_pairs(tmp_path / "chat.jsonl", rows), "pairs").records
    pair = tokenize_pairs(records, tok, DPOSettings(data="x"), context=None)[0]
    assert pair.prompt == "<|user|>add\n<|assistant|>"
    assert tok.decode(list(pair.prompt_ids)) == pair.prompt
    assert pair.chosen_ids[-1] == tok.eos_token_id and tok.decode(list(pair.chosen_ids[:-1])) == "a + b"
    short = tokenize_pairs(records, tok, DPOSettings(data="x"), context=len(pair.chosen_ids) + 2)[0]
    assert short.prompt_ids == pair.prompt_ids[-2:] and short.chosen_ids == pair.chosen_ids


def test_dpo_config_errors_name_the_key(tmp_path):
    cfg = TrainConfig(objective="dpo")
    with pytest.raises(ConfigError, match="dpo.data"):
        cfg.validate_sources()
    with pytest.raises(ConfigError, match="dpo.beta"):
        TrainConfig(objective="dpo", objective_settings=DPOSettings(data="x", beta=0)).validate()
    with pytest.raises(ConfigError, match="sampling.temperature"):
        TrainConfig(objective="dpo", sampling=SamplingSettings(temperature=0.7)).validate()
    cfg = TrainConfig(objective="ppo")
    cfg.reward.source = "dpo"
    with pytest.raises(ConfigError, match="reward.model"):
        cfg.validate_sources()


def _samples(tok, texts):
    from tokenalign.rollout.generate import Sample, encode_prompt

    out = []
    for prompt, completion in texts:
        ids = tok(completion, add_special_tokens=False)["input_ids"]
        out.append(Sample(prompt, completion, ids, True, ids, encode_prompt(tok, prompt)))
    return out


def test_dpo_reward_source_gives_the_exact_log_ratio(tiny_tokenizer):
    """A DPO model equal to its reference rewards nothing; one with logit k raised by c gives
    r_t = β (c [y_t = k] - log(1 + p_k (e^c - 1))), p_k the reference's probability of k."""
    tok = tiny_tokenizer
    ref = build_tiny_lm(tok)
    samples = _samples(tok, [("def add(a, b):\n", "    return a + b"), ("x = ", "1"), ("import os", "\nimport sys\n")])
    same = DPOTokenReward(build_tiny_lm(tok), ref, tok.pad_token_id, beta=0.5, batch_size=2)(samples)
    assert all(r == [0.0] * len(s.generated_ids) for r, s in zip(same.token_rewards, samples))
    assert same.scores == [0.0, 0.0, 0.0]

    k, c, beta = samples[0].generated_ids[1], 2.0, 0.5
    dpo = build_tiny_lm(tok)
    head = torch.nn.Linear(dpo.config.n_embd, dpo.config.vocab_size, bias=True)
    head.weight = dpo.lm_head.weight  # the tied weights, plus a bias on one token
    with torch.no_grad():
        head.bias.zero_()
        head.bias[k] = c
    dpo.lm_head = head
    out = DPOTokenReward(dpo, ref, tok.pad_token_id, beta=beta, batch_size=2)(samples)
    for s, rewards in zip(samples, out.token_rewards):
        ids = torch.tensor([s.prompt_ids + s.generated_ids])
        with torch.no_grad():
            p = torch.softmax(ref(ids).logits[0, len(s.prompt_ids) - 1 : -1], dim=-1)[:, k]
        hit = torch.tensor([float(t == k) for t in s.generated_ids])
        expected = beta * (c * hit - torch.log1p(p * (math.exp(c) - 1)))
        torch.testing.assert_close(torch.tensor(rewards), expected, atol=1e-5, rtol=1e-5)
        assert out.scores[samples.index(s)] == pytest.approx(float(expected.sum()), abs=1e-5)
    assert out.token_rewards[0][1] > 0  # token k itself gained


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("dpo-models")
    tok = build_tiny_tokenizer()
    build_tiny_lm(tok, n_positions=256).save_pretrained(root / "lm")
    tok.save_pretrained(root / "lm")
    other = build_tiny_tokenizer(vocab_size=280)
    build_tiny_lm(other).save_pretrained(root / "other")
    other.save_pretrained(root / "other")
    return root


def _train_args(out, model, *extra):
    base = ["train", "--set", f"out_dir={out}", "--set", f"model={model}", "--set", "task=pep8",
            "--set", "iterations=2", "--set", "prompts_per_iteration=2", "--set", "samples_per_prompt=2",
            "--set", "sampling.max_new_tokens=8", "--set", "eval.every=2", "--set", "eval.prompts=2",
            "--set", "eval.samples_per_prompt=1", "--set", "eval.sampling.max_new_tokens=8",
            "--set", "mixed_precision=no", "--set", "progress=false"]
    return base + [x for kv in extra for x in ("--set", kv)]


def test_dpo_then_rto_from_the_command_line(tmp_path, tiny_model_dir, capsys):
    """`tokenalign train` with objective dpo writes a model; PPO then trains on its token
    log-ratios (reward.source dpo, token placement) plus the scorer's sequence reward."""
    pytest.importorskip("pycodestyle")
    from tokenalign.cli import main

    lm = tiny_model_dir / "lm"
    data = write_pairs(tmp_path / "pairs.jsonl")
    dpo_out = tmp_path / "dpo"
    assert main(_train_args(dpo_out, lm, "objective=dpo", f"dpo.data={data}", "dpo.beta=0.5", "lr=1e-2")) == 0
    rows = [json.loads(x) for x in (dpo_out / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in rows] == [0, 1, 2]
    assert {"rewards_margins", "rewards_accuracies", "rewards_chosen", "rewards_rejected"} <= set(rows[2])
    assert all(math.isfinite(r["loss"]) for r in rows[1:])
    summary = json.loads((dpo_out / "summary.json").read_text())
    assert summary["finished"] and "mean_misalignment" in summary["after"]
    assert (dpo_out / "model" / "model.safetensors").is_file()

    rto_out = tmp_path / "rto"
    assert main(_train_args(rto_out, lm, "objective=ppo", "reward.source=dpo", f"reward.model={dpo_out / 'model'}",
                            "reward.placement=token", "reward.beta=0.05", "reward.plus_scorer=1.0",
                            "ppo.epochs=1", "ppo.minibatch_size=2")) == 0
    rows = [json.loads(x) for x in (rto_out / "metrics.jsonl").read_text().splitlines()]
    assert "token_reward" in rows[1] and rows[1]["token_reward"] != 0.0
    assert "train_misalignment" in rows[1]  # the scorer's sequence term rode along

    capsys.readouterr()
    assert main(_train_args(tmp_path / "x", lm, "objective=dpo")) == 2
    assert "dpo.data" in capsys.readouterr().err
    assert main(_train_args(tmp_path / "y", lm, "reward.source=dpo")) == 2
    assert "reward.model" in capsys.readouterr().err
    assert main(_train_args(tmp_path / "z", lm, "reward.source=dpo", f"reward.model={tiny_model_dir / 'other'}",
                            "reward.placement=token")) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("tokenalign train: error: reward.model") and "tokenizer differs" in last


def test_chat_prompts_in_pairs_load_and_reward_learning_refuses_them(tmp_path):
    from tokenalign.data import load_records
    from tokenalign.data.check import check_file
    from tokenalign.data.records import Message
    from tokenalign.errors import DataError
    from tokenalign.jobs.reward import training_examples

    rows = [{"prompt": [{"role": "user", "content": "add"}], "chosen": "a + b", "rejected": "a+b"}]
    path = write_pairs(tmp_path / "chat.jsonl", rows)
    records = load_records(path, "pairs").records
    assert records[0].prompt == (Message("user", "add"),)
    assert check_file(str(path), "pairs").char_stats["prompt"]["max"] == 3
    with pytest.raises(DataError, match="field 'prompt': chat-message prompts"):
        training_examples(records, "pairs")
