"""The pruned sampling loop (``_sample_pruned``): finished rows leave the batch and the KV
cache, and nothing else changes: greedy output equals ``model.generate`` token for token,
samples come from the same distribution, and stop strings / EOS / the length limit hold."""

from __future__ import annotations

import copy

import pytest
import torch

from conftest import build_tiny_lm
from tokenalign.rollout.batch import build_token_batch, token_logprobs
from tokenalign.rollout.generate import (
    SamplingConfig,
    _can_prune,
    _processors,
    _sample_pruned,
    StopOnStrings,
    encode_prompt,
    generate,
)

PROMPTS = ["def add(a, b):\n", "x", "class Point:\n    def __init__(self, x, y):\n", "import os\nimport sys\n",
           "for i in range(10):\n    ", "The quick brown fox"]


def _left_pad(tokenizer, prompts):
    encoded = [encode_prompt(tokenizer, p) for p in prompts]
    width = max(map(len, encoded))
    ids = torch.full((len(encoded), width), tokenizer.pad_token_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, e in enumerate(encoded):
        ids[i, width - len(e) :], mask[i, width - len(e) :] = torch.tensor(e), 1
    return ids, mask


def _hf_greedy(model, ids, mask, max_new, eos_id, pad_id, criteria=()):
    from transformers import StoppingCriteriaList

    out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_new, do_sample=False, eos_token_id=eos_id,
                         pad_token_id=pad_id, stopping_criteria=StoppingCriteriaList(list(criteria)))
    return out[:, ids.shape[1] :].tolist()


def _pick_eos_and_stop(tok, ref):
    for eos_row, row in enumerate(ref):
        eos = next((t for t in row[1:6] if t != row[0]), None)
        if eos is None:
            continue
        for stop_row, other in enumerate(ref):
            if stop_row == eos_row or eos in other:
                continue
            for k in range(2, 12):
                stop = tok.decode(other[k : k + 2])
                if stop.strip() and stop.isprintable() and "\ufffd" not in stop and stop not in tok.decode(row):
                    return eos_row, eos, stop_row, stop
    raise AssertionError("no row pair to test EOS and stop strings with")


@torch.no_grad()
def test_greedy_equals_model_generate_token_for_token(tiny_tokenizer):
    tok = tiny_tokenizer
    model = build_tiny_lm(tok)
    assert _can_prune(model)
    ids, mask = _left_pad(tok, PROMPTS)
    assert len(set(mask.sum(-1).tolist())) > 1  # real left padding
    max_new, pad = 16, tok.pad_token_id
    ref = _hf_greedy(model, ids, mask, max_new, None, pad)
    # An "EOS" that one row emits a few tokens in, and a stop string another row spells
    # later (the tiny random model never emits its real EOS greedily).
    eos_row, eos, stop_row, stop = _pick_eos_and_stop(tok, ref)
    criteria = [StopOnStrings(tok, [stop], ids.shape[1])]

    hf = _hf_greedy(model, ids, mask, max_new, eos, pad, criteria)
    ours, _ = _sample_pruned(model, ids, mask, _processors(SamplingConfig(greedy=True), True, []), criteria, True, eos, max_new)
    for h, o in zip(hf, ours):
        assert h[: len(o)] == o and all(t == pad for t in h[len(o) :])
    ended = [("eos" if o[-1] == eos else "stop" if stop in tok.decode(o[-10:]) else "limit") for o in ours]
    assert {"eos", "stop", "limit"} <= set(ended), ended
    assert ended[eos_row] == "eos" and ended[stop_row] == "stop"
    assert all(len(o) <= max_new for o in ours) and max(map(len, ours)) == max_new

    # The public entry point: pruned and model.generate paths give the same Samples.
    for cfg in (SamplingConfig(max_new_tokens=max_new, greedy=True, stop=[stop], batch_size=4),
                SamplingConfig(max_new_tokens=max_new, temperature=0.0, batch_size=8)):
        new = generate(model, tok, PROMPTS, cfg, progress=False)
        old = generate(model, tok, PROMPTS, SamplingConfig(**{**cfg.__dict__, "prune_finished": False}), progress=False)
        assert new == old


def _sharp_lm(tokenizer):
    """The tiny LM with its (tied) embeddings scaled up: a peaked next-token distribution."""
    model = build_tiny_lm(tokenizer)
    with torch.no_grad():
        model.get_input_embeddings().weight.mul_(2.0)
    return model


@torch.no_grad()
def test_first_two_tokens_follow_the_model_distribution(tiny_tokenizer):
    """Empirical frequencies of the first two sampled tokens (2,000 samples of one prompt)
    match the exact temperature / top-k probabilities from forward passes, for the pruned
    loop and for model.generate alike."""
    tok = tiny_tokenizer
    model = _sharp_lm(tok)
    prompt, n, temperature, top_k = "def add(a, b):\n", 2000, 0.6, 5
    prompt_ids = encode_prompt(tok, prompt)

    def warped(logits):  # temperature, then top-k, renormalised
        logits = logits.float() / temperature
        keep = logits.topk(top_k).indices
        probs = torch.zeros_like(logits)
        probs[keep] = torch.softmax(logits[keep], -1)
        return probs

    p1 = warped(model(input_ids=torch.tensor([prompt_ids])).logits[0, -1])
    firsts = p1.nonzero().squeeze(1).tolist()
    second = model(input_ids=torch.tensor([prompt_ids + [a] for a in firsts])).logits[:, -1]
    exact = {(a, b): float(p1[a] * q) for a, row in zip(firsts, second) for b, q in enumerate(warped(row).tolist()) if q > 0}
    assert max(exact.values()) < 0.6 and len(exact) == top_k * top_k  # not trivial

    for prune in (True, False):
        cfg = SamplingConfig(max_new_tokens=2, temperature=temperature, top_k=top_k, top_p=1.0, batch_size=n, seed=7,
                             prune_finished=prune, token_healing="off")
        samples = generate(model, tok, [prompt] * n, cfg, progress=False)
        counts: dict[tuple[int, int], int] = {}
        for s in samples:
            assert len(s.generated_ids) == 2 or (len(s.generated_ids) < 2 and s.finished)
            key = tuple(s.generated_ids[:2])
            counts[key] = counts.get(key, 0) + 1
        assert set(counts) <= set(exact)
        # Pearson's chi-square over the 25 pairs (24 degrees of freedom): its 99.99% quantile
        # is ~59; a missing temperature or top-k filter gives hundreds.
        chi2 = sum((counts.get(k, 0) - n * p) ** 2 / (n * p) for k, p in exact.items())
        assert chi2 < 60, (prune, chi2)


@torch.no_grad()
def test_each_step_sees_each_rows_own_context(tiny_tokenizer):
    """At every step, every running row's logits equal a plain forward pass of that row's
    unpadded prompt and generated tokens: the cache, the attention mask and the position
    ids follow the rows through pruning and the dropping of padding columns."""
    from transformers import LogitsProcessor, LogitsProcessorList

    class Record(LogitsProcessor):
        def __init__(self):
            self.calls = []

        def __call__(self, input_ids, scores):
            self.calls.append((input_ids.clone(), scores.clone()))
            return scores

    tok = tiny_tokenizer
    model = _sharp_lm(tok)
    prompts = PROMPTS * 3
    ids, mask = _left_pad(tok, prompts)
    width, pad = ids.shape[1], tok.pad_token_id
    record = Record()
    torch.manual_seed(0)
    out, _ = _sample_pruned(model, ids, mask, LogitsProcessorList([record]), [StopOnStrings(tok, ["e", "\n"], width)],
                         False, tok.eos_token_id, 12)
    lengths = sorted(map(len, out))
    assert len(set(lengths)) >= 3 and lengths[-1] == 12  # rows left at several steps
    assert [c[0].shape[0] for c in record.calls] == [sum(n > t for n in lengths) for t in range(12)]
    worst = 0.0
    for step_ids, scores in record.calls:
        for row, row_scores in zip(step_ids, scores):
            prompt = row[:width]
            real = torch.cat([prompt[(prompt != pad).nonzero()[0, 0] :], row[width:]])
            alone = model(input_ids=real[None]).logits[0, -1]
            worst = max(worst, float((alone - row_scores).abs().max()))
    assert worst < 1e-4, worst


@torch.no_grad()
def test_samples_respect_limits_and_stops_and_have_finite_logprobs(tiny_tokenizer):
    tok = tiny_tokenizer
    model = build_tiny_lm(tok)
    prompts = PROMPTS * 4
    base = generate(model, tok, prompts, SamplingConfig(max_new_tokens=12, temperature=1.0, top_p=1.0, seed=0), progress=False)
    # stop strings that some samples contain: a one-character string from their text
    chars = [c for s in base for c in s.completion if c.isalpha()]
    stops = [max(set(chars), key=chars.count)]
    cfg = SamplingConfig(max_new_tokens=12, temperature=1.0, top_k=0, top_p=0.95, stop=stops, seed=5, batch_size=16)
    samples = generate(model, tok, prompts, cfg, progress=False)
    assert samples == generate(model, tok, prompts, cfg, progress=False)  # seeded
    assert [s.generated_ids for s in samples] != [
        s.generated_ids for s in generate(model, tok, prompts, SamplingConfig(**{**cfg.__dict__, "seed": 6}), progress=False)]
    assert any(s.finished for s in samples) and any(not s.finished for s in samples)
    for s, p in zip(samples, prompts):
        assert s.prompt == p and s.prompt_ids == encode_prompt(tok, p)[: -1 if s.healed else None]
        assert len(s.completion_ids) <= len(s.generated_ids) <= 12
        assert s.generated_ids[: len(s.completion_ids)] == s.completion_ids
        assert s.completion == tok.decode(s.completion_ids)[len(s.healed) :] and not any(x in s.completion for x in stops)
        if s.finished:
            assert s.generated_ids[-1] == tok.eos_token_id or any(x in tok.decode(s.generated_ids) for x in stops)
        else:
            assert len(s.generated_ids) == 12
    batch = build_token_batch([s.prompt_ids for s in samples], [s.generated_ids for s in samples], tok.pad_token_id)
    lp = token_logprobs(model, batch)["logprobs"]
    assert torch.isfinite(lp[batch.response_mask]).all()
    assert (lp[batch.response_mask] <= 0).all()


@torch.no_grad()
def test_conditioned_greedy_sampling_equals_model_generate(tiny_tokenizer):
    from tokenalign.objectives.conditioning import BAD_TOKEN, GOOD_TOKEN, Conditioning
    from tokenalign.objectives.phf_math import add_control_tokens

    tok = copy.deepcopy(tiny_tokenizer)  # the session fixture must keep its vocabulary
    model = build_tiny_lm(tok)
    good, bad = add_control_tokens(model, tok, (GOOD_TOKEN, BAD_TOKEN))
    cond = Conditioning.from_tokenizer(tok)
    prompts = ["x = 1\n", "", "def f():\n    return 1\n"] * 2
    for cfg in (SamplingConfig(max_new_tokens=10, greedy=True, batch_size=8),
                SamplingConfig(max_new_tokens=10, temperature=1.0, top_p=1.0, seed=3)):
        new = generate(model, tok, prompts, cfg, progress=False, conditioning=cond)
        for s in new:
            assert len(s.completion_ids) <= 10 and good not in s.generated_ids and bad not in s.generated_ids
            assert cond.strip(s.conditioned_ids[1]) == s.generated_ids
        if cfg.greedy:
            old = generate(model, tok, prompts, SamplingConfig(**{**cfg.__dict__, "prune_finished": False}),
                           progress=False, conditioning=cond)
            assert new == old


def test_models_generate_cannot_prune_fall_back(tiny_tokenizer):
    model = build_tiny_lm(tiny_tokenizer)
    model.generation_config.repetition_penalty = 1.3  # a processor the pruned loop does not add
    assert not _can_prune(model)
    cfg = SamplingConfig(max_new_tokens=6, greedy=True)
    assert generate(model, tiny_tokenizer, PROMPTS, cfg, progress=False) == generate(
        model, tiny_tokenizer, PROMPTS, SamplingConfig(max_new_tokens=6, greedy=True, prune_finished=False), progress=False)


@pytest.mark.parametrize("max_new", [1, 3])
def test_short_limits(tiny_tokenizer, max_new):
    model = build_tiny_lm(tiny_tokenizer)
    cfg = SamplingConfig(max_new_tokens=max_new, temperature=1.0, top_p=1.0, seed=0)
    for s in generate(model, tiny_tokenizer, PROMPTS, cfg, progress=False):
        assert len(s.generated_ids) <= max_new and (s.finished or len(s.generated_ids) == max_new)


@torch.no_grad()
@pytest.mark.parametrize("temperature,top_p", [(1.0, 1.0), (0.7, 0.9)])
def test_recorded_logprobs_equal_a_forward_pass(tiny_tokenizer, temperature, top_p):
    """The log-probs the sampler records (what a rollout uses instead of a second forward
    pass of the policy) are ``token_logprobs`` at the sampling temperature, without top-p,
    for every generated id: through left padding, pruning, stop strings and EOS."""
    tok = tiny_tokenizer
    model = _sharp_lm(tok)
    prompts = PROMPTS * 3
    cfg = SamplingConfig(max_new_tokens=14, temperature=temperature, top_p=top_p, stop=["e"], seed=1, batch_size=9)
    samples = generate(model, tok, prompts, cfg, progress=False)
    assert any(s.finished for s in samples) and len({len(s.generated_ids) for s in samples}) > 2
    batch = build_token_batch([s.prompt_ids for s in samples], [s.generated_ids for s in samples], tok.pad_token_id)
    forward = token_logprobs(model, batch, temperature=temperature)["logprobs"]
    for i, s in enumerate(samples):
        assert s.logprobs is not None and len(s.logprobs) == len(s.generated_ids)
        assert torch.allclose(torch.tensor(s.logprobs), forward[i, : len(s.generated_ids)], atol=1e-4)
    # Not recorded where the sampler cannot: model.generate.
    old = generate(model, tok, prompts, SamplingConfig(**{**cfg.__dict__, "prune_finished": False}), progress=False)
    assert all(s.logprobs is None for s in old)


def _chat_llama(tmp_path):
    from conftest import save_tiny_smollm2
    from tokenalign.utils.models import load_causal_lm

    model, tok = load_causal_lm(str(save_tiny_smollm2(tmp_path / "llama")))
    questions = ["Hi.", "What is the capital of France, and why?", "Name a fruit.",
                 "Tell me a long story about a dragon who " + "flies over the mountains and " * 6 + "sleeps."]
    prompts = [tok.apply_chat_template([{"role": "user", "content": q}], tokenize=False, add_generation_prompt=True)
               for q in questions]
    return model, tok, prompts


def test_prefill_runs_the_shared_head_once_and_little_padding_with_the_same_logits(tmp_path):
    from tokenalign.rollout.generate import _chunks, _prefill, _shared_prefix

    model, tok, prompts = _chat_llama(tmp_path)
    ids, mask = _left_pad(tok, prompts)
    shared = _shared_prefix(ids, mask)
    assert shared >= 8  # the chat template's system turn
    own = (mask.sum(-1) - shared).tolist()
    assert len(_chunks(own)) > 1  # the long prompt is not padded to by the short ones
    with torch.no_grad():
        logits, cache, cache_mask = _prefill(model, ids, mask, ids.shape[1] + 4)
        for i, p in enumerate(prompts):  # each prompt alone, no padding
            alone = torch.tensor([encode_prompt(tok, p)])
            torch.testing.assert_close(logits[i], model(input_ids=alone).logits[0, -1], atol=1e-5, rtol=1e-5)
    assert cache_mask.shape == mask.shape and cache_mask.sum() == mask.sum()
    assert cache.layers[0].keys.shape[-2] == ids.shape[1]

    # and the whole sampler still decodes as model.generate, token for token
    ref = _hf_greedy(model, ids, mask, 8, None, tok.pad_token_id)
    ours, _ = _sample_pruned(model, ids, mask, _processors(SamplingConfig(greedy=True), True, []), [], True, None, 8)
    assert ours == ref


def test_autocast_linear_weights_same_outputs_restored_after(tmp_path):
    from tokenalign.utils import kernels
    from tokenalign.utils.kernels import autocast_linear_weights

    model, tok, prompts = _chat_llama(tmp_path)
    ids = torch.tensor([encode_prompt(tok, prompts[1])])
    before = {name: id(p) for name, p in model.named_parameters()}
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        ref = model(input_ids=ids).logits
        with autocast_linear_weights(model) as swapped:
            assert swapped == 2 * 7 + 1  # q, k, v, o, gate, up, down per layer and the LM head
            assert model.lm_head.weight.dtype == torch.bfloat16
            assert model.get_input_embeddings().weight.dtype == torch.float32  # tied, not swapped
            if kernels._can_pack("cpu", torch.bfloat16):  # oneDNN-prepacked: the same bf16 matmul
                assert "forward" in model.lm_head.__dict__
            torch.testing.assert_close(model(input_ids=ids).logits, ref, atol=1e-2, rtol=0)  # equal here, in fact
    assert {name: id(p) for name, p in model.named_parameters()} == before
    assert not any("forward" in m.__dict__ for m in model.modules())  # restored
    assert all(p.dtype == torch.float32 for p in model.parameters())
    with autocast_linear_weights(model) as swapped:  # no autocast: nothing to do
        assert swapped == 0


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("heads,kv_heads", [(4, 4), (6, 2)])
def test_decode_attention_equals_sdpa_on_the_samplers_cache(dtype, heads, kv_heads):
    """One query per row against a cache as the sampler keeps it (keys stored transposed, a
    view of a longer buffer, rows selected after some finished, left padding masked): SDPA's
    output within float rounding."""
    from transformers.integrations.sdpa_attention import repeat_kv

    from tokenalign.rollout.generate import _cache_layer_class
    from tokenalign.utils.kernels import decode_attention

    g = torch.Generator().manual_seed(0)
    rows, dim, length = 5, 16, 11
    layer = _cache_layer_class()(length + 4, transposed_keys=True)
    keys, values = (torch.randn(rows, kv_heads, length, dim, generator=g, dtype=dtype) for _ in range(2))
    layer.fill(keys, values)
    running = torch.tensor([0, 2, 3, 4])  # row 1 finished
    layer.batch_select_indices(running)
    step_k, step_v = (torch.randn(len(running), kv_heads, 1, dim, generator=g, dtype=dtype) for _ in range(2))
    k, v = layer.update(step_k, step_v)
    assert k.shape == (len(running), kv_heads, length + 1, dim) and k.transpose(-1, -2).stride(-1) == 1
    mask = torch.ones(len(running), 1, 1, length + 1, dtype=torch.bool)
    mask[0, ..., :4] = mask[2, ..., :7] = False  # padded prefixes
    query = torch.randn(len(running), heads, 1, dim, generator=g, dtype=dtype)
    group = heads // kv_heads
    ref = torch.nn.functional.scaled_dot_product_attention(query, repeat_kv(k, group), repeat_kv(v, group),
                                                           attn_mask=mask, scale=0.3)
    out = decode_attention(query, k, v, mask, scaling=0.3)
    assert out.shape == (len(running), 1, heads, dim) and out.dtype == dtype
    tol = 1e-5 if dtype == torch.float32 else 2e-2
    torch.testing.assert_close(out, ref.transpose(1, 2), atol=tol, rtol=tol)
    additive = torch.zeros(mask.shape, dtype=dtype).masked_fill(~mask, torch.finfo(dtype).min)
    torch.testing.assert_close(decode_attention(query, k, v, additive, scaling=0.3), out, atol=tol, rtol=tol)


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_fast_decode_attention_samples_as_sdpa_greedy(tmp_path, tiny_tokenizer, monkeypatch, arch):
    """The sampler on a model with tokenalign's attention (decode steps by ``decode_attention``
    on the transposed-key cache) decodes greedily as ``model.generate`` with plain SDPA, token
    for token, rows finishing on EOS included."""
    from tokenalign.utils import kernels
    from tokenalign.utils.kernels import use_fast_kernels

    if arch == "llama":  # grouped-query attention (2 heads, 1 kv head)
        model, tok, prompts = _chat_llama(tmp_path)
        with torch.no_grad():  # weights scaled up: greedy paths that vary (at init they repeat one token)
            for p in model.parameters():
                if p.dim() == 2:
                    p.mul_(10.0)
    else:
        tok, prompts = tiny_tokenizer, PROMPTS
        model = build_tiny_lm(tok)
        use_fast_kernels(model)
    assert model.config._attn_implementation == "tokenalign_sdpa"
    plain, decode = copy.deepcopy(model), kernels.decode_attention
    plain.set_attn_implementation("sdpa")
    ids, mask = _left_pad(tok, prompts)
    ref = _hf_greedy(plain, ids, mask, 12, None, tok.pad_token_id)
    # an "EOS" that one row emits a few tokens in and the others never do: that row finishes early
    eos, early = next((t, i) for i, row in enumerate(ref) for t in row[1:5]
                      if t not in row[: row.index(t)] and not any(t in other for other in ref if other is not row))
    hf = _hf_greedy(plain, ids, mask, 12, eos, tok.pad_token_id)
    calls = []
    monkeypatch.setattr(kernels, "decode_attention", lambda *a, **k: calls.append(1) or decode(*a, **k))
    with torch.no_grad():  # as generate runs it
        ours, _ = _sample_pruned(model, ids, mask, _processors(SamplingConfig(greedy=True), True, []), [], True, eos, 12)
    assert len(ours[early]) <= 5 and len(calls) >= 11 * model.config.num_hidden_layers  # and one-token prefills
    for h, o in zip(hf, ours):
        assert h[: len(o)] == o and all(t == tok.pad_token_id for t in h[len(o) :])
