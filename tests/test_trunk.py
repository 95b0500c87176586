"""Reuse of the frozen trunk (policy/trunk.py): with LoRA on the last blocks, an update pass
that starts from the kept states of the lower blocks computes the same log-probs, values and
gradients as the whole forward pass, and the trainer runs the lower blocks once a rollout
(shared by the reference, a value model on the same base and the update)."""

from __future__ import annotations

import copy

import pytest
import torch

from conftest import LikedTokens, build_tiny_lm
from tokenalign.objectives.ppo import PPOSettings
from tokenalign.policy.config import TrainConfig
from tokenalign.policy.trainer import PolicyTrainer
from tokenalign.policy.trunk import Trunk, frozen_blocks
from tokenalign.policy.value import ValueModel
from tokenalign.rollout.batch import build_token_batch, token_logprobs
from tokenalign.rollout.generate import SamplingSettings
from tokenalign.utils.lora import LoraSettings, wrap_lora

pytest.importorskip("peft")
LORA = LoraSettings(enabled=True, r=4, alpha=8, layers=[2, 3])


def tiny_llama(vocab: int, seed: int = 0):
    """A 4-block, 32-wide random Llama (GQA: 4 heads, 2 key/value heads), fp32, eval mode."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=4,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128)
    return LlamaForCausalLM(config).eval()


def lora_pair(vocab: int):
    """A LoRA policy and a LoRA value model (adapters on blocks 2 and 3) on one random Llama;
    the adapters' B is set non-zero so that they change the forward pass."""
    base = tiny_llama(vocab)
    value = ValueModel(copy.deepcopy(base.model)).add_lora(LORA)
    policy = wrap_lora(base, LORA, "CAUSAL_LM")
    torch.manual_seed(1)
    for model in (policy, value):
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.data.normal_(std=0.1)
    return policy, value


def ragged_batch(vocab: int):
    """Prompts of 3-9 tokens (left padded) and responses of 2-6 tokens (right padded)."""
    g = torch.Generator().manual_seed(0)
    prompts = [torch.randint(3, vocab, (n,), generator=g).tolist() for n in (3, 9, 5, 7, 4, 6)]
    responses = [torch.randint(3, vocab, (n,), generator=g).tolist() for n in (6, 2, 4, 5, 3, 6)]
    return build_token_batch(prompts, responses, pad_id=0)


def test_frozen_blocks_counts_the_untrained_lower_blocks(tiny_tokenizer):
    policy, value = lora_pair(len(tiny_tokenizer))
    assert frozen_blocks(policy) == 2 and frozen_blocks(value.backbone) == 2
    assert frozen_blocks(tiny_llama(len(tiny_tokenizer))) == 0  # fully trained: nothing to reuse
    every_block = wrap_lora(tiny_llama(len(tiny_tokenizer)), LoraSettings(enabled=True, r=4, alpha=8), "CAUSAL_LM")
    assert frozen_blocks(every_block) == 0
    gpt2 = wrap_lora(build_tiny_lm(tiny_tokenizer), LoraSettings(enabled=True, r=4, alpha=8, layers=[1]), "CAUSAL_LM")
    assert frozen_blocks(gpt2) == 0  # GPT-2 adds positions to inputs_embeds: not split


def test_update_pass_from_the_trunk_equals_the_whole_forward(tiny_tokenizer):
    """Rows 2, 3, 4 of a ragged batch, trimmed as an update chunk is: log-probs, entropies,
    values and every adapter's gradient match the whole forward pass."""
    policy, value = lora_pair(len(tiny_tokenizer))
    batch = ragged_batch(len(tiny_tokenizer))
    idx = torch.tensor([2, 3, 4])
    sub, _ = batch.rows(idx).trimmed()
    # the trim drops leading prompt and trailing response columns: the slicing is tested
    assert sub.prompt_width < batch.prompt_width and sub.response_mask.shape[1] < batch.response_mask.shape[1]
    trunks = Trunk.of(policy, batch, rows_per_pass=4), Trunk.of(value.backbone, batch)  # 4 + 2 rows, and 6 at once
    assert trunks[0].states.shape == trunks[1].states.shape == (6, batch.input_ids.shape[1], 32)
    results = {}
    for name, (pt, vt) in {"whole": (None, None), "trunk": (trunks[0].rows(batch, idx, sub), trunks[1].rows(batch, idx, sub))}.items():
        policy.zero_grad(), value.zero_grad()
        out = token_logprobs(policy, sub, with_entropy=True, trunk=pt)
        values = value(sub, trunk=vt)
        mask = sub.response_mask
        (out["logprobs"][mask].sum() + out["neg_entropy"][mask].sum() + values[mask].pow(2).sum()).backward()
        grads = {n: p.grad.clone() for m in (policy, value) for n, p in m.named_parameters() if p.requires_grad}
        results[name] = (out["logprobs"].detach(), out["neg_entropy"].detach(), values.detach(), grads)
    whole, trunk = results["whole"], results["trunk"]
    mask = sub.response_mask
    for a, b in zip(whole[:3], trunk[:3]):
        assert torch.allclose(a[mask], b[mask], atol=1e-5)
    assert whole[3].keys() == trunk[3].keys() and len(whole[3]) == 2 * 2 * 2 * 2 + 2  # q, v x A, B x 2 blocks x 2 models + head
    for n in whole[3]:
        assert torch.allclose(whole[3][n], trunk[3][n], atol=1e-5), n


def _ppo_trainer(tok, reuse: bool, policy, value):
    cfg = TrainConfig(objective="ppo", iterations=1, prompts_per_iteration=6, samples_per_prompt=2, lr=1e-2, kl_coef=0.0,
                      mixed_precision="no", save_every=0, sampling=SamplingSettings(max_new_tokens=8, batch_size=64),
                      objective_settings=PPOSettings(epochs=2, minibatch_size=4), seed=0, reuse_frozen_trunk=reuse)
    prompts = ["def add(a, b):\n", "x = ", "class Point:\n", "import os", "for i in", "print("]
    return PolicyTrainer(cfg, policy, tok, LikedTokens(len(tok)), prompts, value_model=value)


def test_trainer_runs_the_lower_blocks_once_an_update_with_the_same_result(tiny_tokenizer):
    """One PPO update (2 epochs x 3 minibatches) from one rollout, with and without reuse: the
    same statistics and adapters after it; block 0 runs at every pass without reuse, and
    not in the update with it (the rollout ran it once)."""
    outcomes = {}
    for reuse in (False, True):
        policy, value = lora_pair(len(tiny_tokenizer))
        trainer = _ppo_trainer(tiny_tokenizer, reuse, policy, value)
        ro = trainer.rollout(trainer.iteration_prompts(0), seed=0)
        calls = []
        hooks = [m.get_submodule(path).register_forward_hook(lambda *a: calls.append(1))
                 for m, path in ((policy, "base_model.model.model.layers.0"), (value, "backbone.base_model.model.layers.0"))]
        stats = trainer.update(ro)
        for h in hooks:
            h.remove()
        adapters = {n: p.detach().clone() for n, p in policy.named_parameters() if p.requires_grad}
        outcomes[reuse] = (stats, adapters, len(calls))
    (stats0, adapters0, calls0), (stats1, adapters1, calls1) = outcomes[False], outcomes[True]
    # (policy + value) x epochs x minibatches, then not at all: the update starts from the rollout's trunk
    assert calls0 == 2 * 2 * 3 and calls1 == 0
    for key in ("policy_loss", "value_loss", "clip_fraction", "entropy"):
        assert stats0[key] == pytest.approx(stats1[key], rel=1e-4, abs=1e-6), key
    for n in adapters0:
        assert torch.allclose(adapters0[n], adapters1[n], atol=1e-5), n


def test_rollout_passes_start_from_one_shared_trunk(tiny_tokenizer):
    """With LoRA on the last blocks of a policy and a value model on one base, a rollout runs
    the lower blocks once: the reference (adapters off) and the value model start from the
    policy's trunk, with the same reference log-probs and values as their whole passes; the
    update reuses it. A value model on other weights gets its own trunk."""
    from tokenalign.policy.trunk import same_trunk

    outcomes = {}
    for reuse in (False, True):
        policy, value = lora_pair(len(tiny_tokenizer))
        trainer = _ppo_trainer(tiny_tokenizer, reuse, policy, value)
        calls = []
        hooks = [m.get_submodule(path).register_forward_hook(lambda *a: calls.append(1))
                 for m, path in ((policy, "base_model.model.model.layers.0"), (value, "backbone.base_model.model.layers.0"))]
        in_rollout = []  # block-0 calls of make_rollout (after sampling)
        make_rollout = trainer.make_rollout

        def counted(*args, **kwargs):
            start = len(calls)
            out = make_rollout(*args, **kwargs)
            in_rollout.append(len(calls) - start)
            return out

        trainer.make_rollout = counted
        ro = trainer.rollout(trainer.iteration_prompts(0), seed=0)
        trunks = ro.trunks
        before_update = len(calls)
        stats = trainer.update(ro)
        assert ro.trunks is None  # released by the update, its last user
        for h in hooks:
            h.remove()
        outcomes[reuse] = (ro, stats, in_rollout[0] + len(calls) - before_update, trunks)
    (ro0, stats0, after0, trunks0), (ro1, stats1, after1, trunks1) = outcomes[False], outcomes[True]
    assert trunks0 == (None, None, None)
    assert trunks1.value is trunks1.policy and trunks1.reference is trunks1.policy
    mask = ro0.batch.response_mask
    assert torch.equal(ro0.batch.input_ids, ro1.batch.input_ids)  # the same samples
    assert torch.allclose(ro0.ref_logprobs[mask], ro1.ref_logprobs[mask], atol=1e-5)
    assert torch.allclose(ro0.values[mask], ro1.values[mask], atol=1e-5)
    assert not torch.allclose(ro1.ref_logprobs[mask], ro1.logprobs[mask], atol=1e-3)  # the adapters were off
    # after sampling, block 0 ran once (the shared trunk) instead of at the rollout's 2 passes
    # (reference, value) and the update's 2 x 2 x 3
    assert after0 == 2 + 2 * 2 * 3 and after1 == 1
    for key in ("policy_loss", "value_loss", "clip_fraction"):
        assert stats0[key] == pytest.approx(stats1[key], rel=1e-4, abs=1e-6), key

    policy, value = lora_pair(len(tiny_tokenizer))
    assert same_trunk(policy, value.backbone, 2)
    with torch.no_grad():
        value.backbone.get_input_embeddings().weight[5, 0] += 1.0
    assert not same_trunk(policy, value.backbone, 2)
    trainer = _ppo_trainer(tiny_tokenizer, True, policy, value)
    ro = trainer.rollout(trainer.iteration_prompts(0), seed=0)
    assert ro.trunks.value is not None and ro.trunks.value is not ro.trunks.policy
