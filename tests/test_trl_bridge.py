"""TRL's GRPOTrainer on tokenalign's per-token advantages: a tiny GPT-2, one real train() step."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("trl")

from conftest import build_tiny_lm  # noqa: E402
from tokenalign.integrations.trl import TokenGRPOTrainer, group_baseline, token_advantages  # noqa: E402
from tokenalign.objectives.advantages import reward_to_go  # noqa: E402


def per_token_reward(prompts, completions, completion_ids, **kwargs):
    """Dense rewards: token k of a completion gets k + 1 (so they depend on the length)."""
    return [[float(k + 1) for k in range(len(ids))] for ids in completion_ids]


class RecordingTrainer(TokenGRPOTrainer):
    """Keeps what TRL's loss gets, then computes the loss as usual."""

    seen: list = []

    def _compute_loss(self, model, inputs):
        self.seen.append({k: inputs[k].detach().clone() for k in ("advantages", "completion_mask")})
        return super()._compute_loss(model, inputs)


def test_token_advantages_by_hand():
    rewards = torch.tensor([[1.0, 2.0, 0.0], [3.0, 0.0, 0.0], [1.0, 1.0, 1.0], [0.0, 0.0, 0.0]])
    mask = torch.tensor([[1, 1, 0], [1, 0, 0], [1, 1, 1], [1, 1, 0]])
    totals = rewards.sum(dim=1)  # [3, 3, 3, 0]: groups (0, 1) and (2, 3)
    base = group_baseline(totals, 2)  # leave-one-out: each sample's partner
    assert base.tolist() == [3.0, 3.0, 0.0, 3.0]
    adv = token_advantages(rewards, mask, base)
    assert adv.tolist() == [[0.0, -1.0, 0.0], [0.0, 0.0, 0.0], [3.0, 2.0, 1.0], [-3.0, -3.0, 0.0]]
    torch.testing.assert_close(token_advantages(rewards, mask), reward_to_go(rewards, mask.bool()))


def test_grpo_trains_on_token_advantages(tiny_tokenizer, tmp_path):
    from datasets import Dataset
    from trl import GRPOConfig

    tok = tiny_tokenizer
    model = build_tiny_lm(tok)
    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    args = GRPOConfig(output_dir=str(tmp_path), per_device_train_batch_size=4, num_generations=2,
                      max_completion_length=6, max_steps=1, steps_per_generation=1, num_iterations=1, learning_rate=1e-2,
                      beta=0.0, logging_steps=1, save_strategy="no", report_to=[], use_cpu=True, bf16=False,
                      gradient_checkpointing=False, seed=0, shuffle_dataset=False)
    prompts = Dataset.from_dict({"prompt": ["def add(a, b):\n", "import os\n"] * 2})
    RecordingTrainer.seen = []
    trainer = RecordingTrainer(model=model, token_rewards="blame", scorer=per_token_reward, args=args,
                               train_dataset=prompts, processing_class=tok)
    trainer.train()

    assert RecordingTrainer.seen, "the loss never ran"
    got = RecordingTrainer.seen[0]
    adv, mask = got["advantages"], got["completion_mask"]
    assert adv.dim() == 2 and adv.shape == mask.shape  # (batch, tokens), not one scalar per completion
    lengths = mask.sum(dim=1)
    rewards = (torch.arange(1, mask.shape[1] + 1).float().expand_as(mask)) * mask  # k + 1 on real tokens
    totals = rewards.sum(dim=1)
    # reward-to-go minus the other sample of the pair's total, on real tokens
    partner = totals.view(-1, 2).flip(1).reshape(-1)
    expected = (reward_to_go(rewards, mask.bool()) - partner.unsqueeze(1)) * mask
    torch.testing.assert_close(adv, expected)
    assert lengths.min() >= 1
    assert any(not torch.equal(before[k], v) for k, v in model.named_parameters()), "weights did not change"


def test_grpo_completions_end_at_stop_strings(tiny_tokenizer, tmp_path):
    """TRL samples stop at the first stop string in the generated text and are trained on
    exactly tokenalign's tokens: through the token that completes the stop string."""
    from datasets import Dataset
    from trl import GRPOConfig

    from tokenalign.integrations.trl import StopStringGRPOTrainer, sequence_reward_func
    from tokenalign.rollout.generate import first_stop

    class Recording(StopStringGRPOTrainer):
        seen: list = []

        def _compute_loss(self, model, inputs):
            self.seen.append({k: inputs[k].detach().clone() for k in ("completion_ids", "completion_mask")})
            return super()._compute_loss(model, inputs)

    tok, stops, width = tiny_tokenizer, ["e", " ", "t", "a", "(", "\n"], 24
    args = GRPOConfig(output_dir=str(tmp_path), per_device_train_batch_size=8, num_generations=4,
                      max_completion_length=width, max_steps=1, steps_per_generation=1, num_iterations=1, learning_rate=1e-3,
                      beta=0.0, logging_steps=1, save_strategy="no", report_to=[], use_cpu=True, bf16=False,
                      gradient_checkpointing=False, seed=0, shuffle_dataset=False)
    lengths = lambda prompts, completions, completion_ids, **kw: [float(len(c)) for c in completion_ids]  # noqa: E731
    gold = sequence_reward_func("scorer", tokenizer=tok, scorer=lambda p, c: len(c) / 100, stop_strings=stops)
    trainer = Recording(model=build_tiny_lm(tok), reward_funcs=[lengths, gold], args=args, stop_strings=stops,
                        train_dataset=Dataset.from_dict({"prompt": ["def add(a, b):\n", "import os\n"] * 4}),
                        processing_class=tok)
    Recording.seen = []
    trainer.train()
    (batch,) = Recording.seen
    rows = [ids[m.bool()].tolist() for ids, m in zip(batch["completion_ids"], batch["completion_mask"])]
    stopped = 0
    for ids in rows:
        text = tok.decode(ids)
        if first_stop(text, stops) >= 0:  # a stop string: it ends at the last token, and nothing follows
            stopped += 1
            assert first_stop(tok.decode(ids[:-1]), stops) < 0, text
        else:  # no stop string: the length limit or EOS ended it
            assert len(ids) == width or ids[-1] == tok.eos_token_id, text
    assert stopped >= 6, rows
    # sampling itself stopped once every row had (not only the loss masked): fewer columns than the limit
    assert batch["completion_ids"].shape[1] == max(len(ids) for ids in rows) < width
    # the gold reward scored each row's text before its stop string (misalignment = chars / 100)
    logged = [x for x in trainer.state.log_history if "rewards/scorer/mean" in x]
    texts = [tok.decode(ids) for ids in rows]
    cut = [t[: first_stop(t, stops)] if first_stop(t, stops) >= 0 else t for t in texts]
    assert logged and abs(logged[0]["rewards/scorer/mean"] + sum(len(c) for c in cut) / 100 / len(cut)) < 1e-6
