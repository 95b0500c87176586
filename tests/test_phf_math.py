"""PHF objectives against hand-computed values: thresholds, filtering, MLE, unlikelihood,
RWR, AWR, and the conditional-training pieces (control tokens, segment-wise ids, the
generation-time logits processor)."""

from __future__ import annotations

import math
import random

import pytest
import torch

from tokenalign.objectives.phf_math import (
    add_control_tokens,
    aligned_tokens,
    awr_loss,
    conditional_token_ids,
    keep_for_filtering,
    log1m_exp,
    mle_loss,
    rwr_loss,
    rwr_weights,
    strip_control_tokens,
    unlikelihood_loss,
)

D = torch.float64


def T(x, dtype=D):
    return torch.tensor(x, dtype=dtype)


@pytest.fixture()
def tokenizer():
    from transformers import AutoTokenizer

    from tokenalign.tasks.pep8 import base_model_path

    return AutoTokenizer.from_pretrained(base_model_path())


def tiny_gpt2(vocab_size: int, tied: bool = True):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    cfg = GPT2Config(
        n_layer=1, n_embd=16, n_head=2, n_positions=64, vocab_size=vocab_size, bos_token_id=0, eos_token_id=0,
        tie_word_embeddings=tied,
    )
    return GPT2LMHeadModel(cfg).eval()


# --------------------------------------------------------------------------- thresholds


def test_threshold_zero_is_hard():
    scores = T([[0.0, 1e-6, 2.0]])
    assert aligned_tokens(scores, 0.0).tolist() == [[True, False, False]]
    assert aligned_tokens(scores, 1e-6).tolist() == [[True, True, False]]
    # through the loss: at t = 0 the 1e-6 token is pushed down, not up
    logp, mask = T([[math.log(0.5)] * 3]), torch.ones(1, 3, dtype=torch.bool)
    loss = unlikelihood_loss(logp, aligned_tokens(scores, 0.0), mask, alpha=1.0)
    assert loss.item() == pytest.approx((math.log(2) + 2 * math.log(2)) / 3)


def test_filtering_drops_documents_above_the_threshold():
    t = 2.361e-3
    assert keep_for_filtering([0.0, 1e-3, t, 3e-3, float("nan")], t) == [True, True, True, False, False]
    assert keep_for_filtering([0.0, 1e-9], 0.0) == [True, False]


# --------------------------------------------------------------------------- losses


class _AllFinite(torch.overrides.TorchFunctionMode):
    """Fails on any floating-point tensor result that is not finite."""

    results = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if isinstance(out, torch.Tensor) and out.is_floating_point():
            type(self).results += 1
            assert torch.isfinite(out).all(), f"{func} produced a non-finite value"
        return out


def test_mle_loss_is_mean_token_cross_entropy():
    logp = T([[math.log(0.5), math.log(0.25)], [math.log(0.125), 123.0]])
    mask = T([[1, 1], [1, 0]]).bool()
    assert mle_loss(logp, mask).item() == pytest.approx((1 + 2 + 3) * math.log(2) / 3)


def test_unlikelihood_by_hand_with_padding():
    p = [0.5, 0.9, 0.2]
    logp = T([[math.log(x) for x in p] + [-7.0]])
    aligned = T([[True, False, False, True]], dtype=torch.bool)
    mask = T([[True, True, True, False]], dtype=torch.bool)
    expected = (-math.log(0.5) - 0.5 * math.log(0.1) - 0.5 * math.log(0.8)) / 3
    assert unlikelihood_loss(logp, aligned, mask, alpha=0.5).item() == pytest.approx(expected, rel=1e-12)


def test_unlikelihood_is_finite_when_p_is_one_in_float32():
    logp = torch.tensor([[math.log1p(-1e-12), 0.0, math.log(0.5)]], dtype=torch.float32, requires_grad=True)
    aligned = torch.zeros(1, 3, dtype=torch.bool)
    mask = torch.ones(1, 3, dtype=torch.bool)
    loss = unlikelihood_loss(logp, aligned, mask, alpha=1.0)
    floor = -math.log(1e-5)  # 1 - p floored at 1e-5
    assert torch.isfinite(loss) and loss.item() == pytest.approx((2 * floor + math.log(2)) / 3, rel=1e-5)
    loss.backward()
    assert torch.isfinite(logp.grad).all()
    # d/dlogp of -log(1 - p) at p = 1/2 is p / (1 - p) = 1, over 3 tokens
    assert logp.grad[0, 2].item() == pytest.approx(1 / 3, rel=1e-5)
    # near 1, log(1 - p) keeps its precision (1 - exp(logp) would round in float32)
    near = torch.tensor([math.log1p(-1e-4)], dtype=torch.float32)
    assert log1m_exp(near, min_prob=1e-30).item() == pytest.approx(math.log(1e-4), abs=1e-4)


def test_rwr_weights_clamp_and_do_not_overflow():
    beta = 10.0
    w = rwr_weights(T([[0.0, -10.0, 10.0, 1e5]]), beta, max_weight=1000.0)
    assert torch.allclose(w, T([[1.0, math.exp(-1), math.exp(1), 1000.0]]))
    # R / beta = 1e4 in float32: exp would be inf before a plain clamp
    r = torch.tensor([[1e4, 50.0]], dtype=torch.float32, requires_grad=True)
    w32 = rwr_weights(r, 1.0, max_weight=1000.0)
    assert torch.isfinite(w32).all() and w32.tolist() == [[1000.0, 1000.0]]
    assert not w32.requires_grad
    with _AllFinite() as seen:  # no intermediate inf on the way (a plain exp then clamp would make one)
        rwr_weights(r, 1.0, max_weight=1000.0)
    assert seen.results > 0
    assert rwr_weights(T([[math.log(5.0)]]), 1.0, max_weight=2.0).item() == pytest.approx(2.0)


def test_rwr_loss_by_hand():
    beta = 10.0
    logp = T([[math.log(0.5), math.log(0.25), -50.0]], dtype=torch.float64).requires_grad_()
    rewards = T([[0.0, -beta * math.log(2), 1e6]])  # weights 1, 1/2 (third token is padding)
    mask = T([[1, 1, 0]]).bool()
    loss = rwr_loss(logp, rewards, mask, beta)
    assert loss.item() == pytest.approx((math.log(2) + 0.5 * 2 * math.log(2)) / 2, rel=1e-12)
    loss.backward()
    assert logp.grad[0].tolist() == pytest.approx([-0.5, -0.25, 0.0])


def test_awr_by_hand_and_value_gradient_only_from_mse():
    beta = 1.0
    logp = T([[math.log(0.5), math.log(0.5), 9.0]]).requires_grad_()
    rewards = T([[1.0, 0.0, 5.0]])
    values = T([[0.5, 0.0, -3.0]]).requires_grad_()
    mask = T([[1, 1, 0]]).bool()

    loss, stats = awr_loss(logp, rewards, values, mask, alpha=0.5, beta=beta)
    w = [math.exp(0.5), 1.0]
    policy = (w[0] * math.log(2) + w[1] * math.log(2)) / 2
    value = (0.5**2 + 0.0) / 2
    assert loss.item() == pytest.approx(0.5 * policy + 0.5 * value, rel=1e-12)
    assert stats["mean_weight"] == pytest.approx(sum(w) / 2)
    assert stats["value_loss"] == pytest.approx(value) and stats["policy_loss"] == pytest.approx(policy)
    assert stats["clamped_fraction"] == 0.0
    loss.backward()
    # (1 - α) * 2 (V - R) / N_tokens; the weight term contributes nothing
    assert values.grad[0].tolist() == pytest.approx([0.5 * 2 * (0.5 - 1.0) / 2, 0.0, 0.0])

    # α = 1: only the weighted CE remains, and V gets no gradient through the weight
    logp.grad, values.grad = None, None
    loss1, _ = awr_loss(logp, rewards, values, mask, alpha=1.0, beta=beta)
    loss1.backward()
    assert values.grad is None or torch.count_nonzero(values.grad) == 0
    assert logp.grad[0].tolist() == pytest.approx([-w[0] / 2, -w[1] / 2, 0.0])

    _, clamped = awr_loss(logp, rewards, values, mask, alpha=0.5, beta=beta, max_weight=1.5)
    assert clamped["clamped_fraction"] == pytest.approx(0.5)  # e^0.5 > 1.5 on token 0; padding ignored
    assert clamped["mean_weight"] == pytest.approx((1.5 + 1.0) / 2)


# --------------------------------------------------------------------------- conditional training


def test_add_control_tokens_mean_init_and_idempotence(tokenizer):
    n = len(tokenizer)
    for tied in (True, False):
        tok = tokenizer if tied else type(tokenizer).from_pretrained(tokenizer.name_or_path)
        model = tiny_gpt2(n, tied=tied)
        old_in = model.get_input_embeddings().weight.detach().clone()
        old_out = model.get_output_embeddings().weight.detach().clone()
        ids = add_control_tokens(model, tok, noise_std=0.01, seed=0)
        assert ids == [n, n + 1] and len(tok) == n + 2
        assert tok("a<|good|>b<|bad|>", add_special_tokens=False)["input_ids"][1::2] == ids
        for new, old in ((model.get_input_embeddings().weight, old_in), (model.get_output_embeddings().weight, old_out)):
            assert new.shape == (n + 2, 16)
            assert torch.equal(new[:n], old)  # existing rows untouched
            mean, std = old.mean(0), old.std().item()
            dev = (new[n:] - mean).abs()
            assert dev.max() < 6 * 0.01 * std and dev.max() > 0  # mean + small (relative) noise
            assert not torch.equal(new[n], new[n + 1])
        if tied:
            assert model.get_output_embeddings().weight.data_ptr() == model.get_input_embeddings().weight.data_ptr()
        # idempotent: same ids, nothing changes
        before = model.get_input_embeddings().weight.detach().clone()
        before_out = model.get_output_embeddings().weight.detach().clone()
        assert add_control_tokens(model, tok, seed=1) == ids
        assert len(tok) == n + 2
        assert torch.equal(model.get_input_embeddings().weight, before)
        assert torch.equal(model.get_output_embeddings().weight, before_out)
        assert model.config.vocab_size == n + 2


def test_conditional_token_ids_keep_the_tokenisation_and_mark_segments(tokenizer):
    text = "def f(x):\n    y=x\n    return y\n"
    segments = [(0, 10, 0.0), (10, 18, 0.125), (18, 31, 1e-6)]
    good, bad = 9001, 9002
    plain = tokenizer(text, add_special_tokens=False)["input_ids"]
    spans = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
    # the token holding each segment's first character (line 2 starts inside "\n   ")
    at = [next(i for i, (_, e) in enumerate(spans) if e > start) for start, _, _ in segments]
    assert spans[at[1]][0] < 10  # a merged newline + indentation token: tokenising lines apart would split it

    def expected(marks):
        out = []
        for i, t in enumerate(plain):
            if i in marks:
                out.append(marks[i])
            out.append(t)
        return out

    ids = conditional_token_ids(tokenizer, text, segments, 0.0, 0.0, good, bad, random.Random(0))
    assert ids == expected({at[0]: good, at[1]: bad, at[2]: bad})  # threshold 0 is hard: 1e-6 is bad
    ids = conditional_token_ids(tokenizer, text, segments, 0.2, 0.0, good, bad, random.Random(0))
    assert ids == expected({at[0]: good, at[1]: good, at[2]: good})
    assert conditional_token_ids(tokenizer, text, segments, 0.0, 1.0, good, bad, random.Random(0)) == plain

    draws = _draws(0, 3)
    keep = [d >= 0.5 for d in draws]  # Random(0): 0.844, 0.758, 0.421 -> mark, mark, none
    assert keep == [True, True, False]
    ids = conditional_token_ids(tokenizer, text, segments, 0.0, 0.5, good, bad, random.Random(0))
    assert ids == expected({at[0]: good, at[1]: bad})
    assert strip_control_tokens(ids, {good, bad}) == plain
    assert tokenizer.decode(strip_control_tokens(ids, {good, bad})) == text
    assert conditional_token_ids(tokenizer, "", [], 0.0, 0.0, good, bad, random.Random(0)) == []


def test_segments_starting_in_one_token_share_the_worst_mark(tokenizer):
    text = "x\n\n\n"  # lines 2 and 3 may start inside one merged newline token
    segments = [(0, 2, 0.0), (2, 3, 0.5), (3, 4, 0.0)]
    spans = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
    holders = [next(i for i, (_, e) in enumerate(spans) if e > start) for start, _, _ in segments]
    ids = conditional_token_ids(tokenizer, text, segments, 0.0, 0.0, 1, 2, random.Random(0))
    assert ids.count(1) + ids.count(2) == len(set(holders))
    if holders[1] == holders[2]:
        assert ids.count(2) == 1  # the shared mark is bad: one of its segments is


def _draws(seed: int, n: int) -> list[float]:
    rng = random.Random(seed)
    return [rng.random() for _ in range(n)]
