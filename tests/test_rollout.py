"""Rollout tensors and log-probs: the position-id pitfall (SPEC section 5) and what a
sample records for training."""

from __future__ import annotations

import torch

from conftest import build_tiny_lm
from tokenalign.rollout.batch import build_token_batch, response_char_spans, token_logprobs
from tokenalign.rollout.generate import SamplingConfig, generate

PROMPTS = ["def add(a, b):\n", "x", "class Point:\n    def __init__(self, x, y):\n        self.x = x\n", "import os"]


def _alone_logprobs(model, prompt_ids, response_ids):
    ids = torch.tensor([list(prompt_ids) + list(response_ids)])
    logits = model(input_ids=ids).logits[0, len(prompt_ids) - 1 : -1]
    return torch.log_softmax(logits.float(), -1).gather(-1, torch.tensor(response_ids).unsqueeze(-1)).squeeze(-1)


def test_rollout_logprobs_match_unpadded_forward_within_1e4(tiny_tokenizer):
    model = build_tiny_lm(tiny_tokenizer)
    samples = generate(model, tiny_tokenizer, PROMPTS, SamplingConfig(max_new_tokens=10, temperature=1.0, top_p=1.0, seed=3), progress=False)
    assert len({len(s.prompt_ids) for s in samples}) > 1  # unequal prompt lengths: real left padding
    batch = build_token_batch([s.prompt_ids for s in samples], [s.generated_ids for s in samples], tiny_tokenizer.pad_token_id)
    with torch.no_grad():
        lp = token_logprobs(model, batch)["logprobs"]
        naive = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits  # positions ignore padding
    worst_naive = 0.0
    for i, s in enumerate(samples):
        n = len(s.generated_ids)
        with torch.no_grad():
            alone = _alone_logprobs(model, s.prompt_ids, s.generated_ids)
        assert torch.allclose(lp[i, :n], alone, atol=1e-4), i
        assert not batch.response_mask[i, n:].any() and batch.response_mask[i, :n].all()
        p = batch.prompt_width
        naive_lp = torch.log_softmax(naive[i, p - 1 : p - 1 + n].float(), -1).gather(-1, torch.tensor(s.generated_ids).unsqueeze(-1)).squeeze(-1)
        worst_naive = max(worst_naive, float((naive_lp - alone).abs().max()))
    # The check can fail: position ids that ignore the padding give other log-probs.
    assert worst_naive > 1e-3


def test_temperature_and_entropy(tiny_tokenizer):
    model = build_tiny_lm(tiny_tokenizer)
    batch = build_token_batch([[5, 6], [7]], [[8, 9, 10], [11]], tiny_tokenizer.pad_token_id)
    with torch.no_grad():
        out = token_logprobs(model, batch, with_entropy=True, temperature=0.5)
        logits = model(input_ids=torch.tensor([[5, 6, 8, 9, 10]])).logits[0, 1:-1] / 0.5
    ref = torch.log_softmax(logits, -1)
    assert torch.allclose(out["logprobs"][0], ref.gather(-1, torch.tensor([[8], [9], [10]])).squeeze(-1), atol=1e-5)
    assert torch.allclose(out["neg_entropy"][0], (ref.exp() * ref).sum(-1), atol=1e-5)
    assert (out["neg_entropy"] <= 0).all()


def test_generated_ids_include_the_tokens_that_stopped_the_sample(tiny_tokenizer):
    from tokenalign.rollout.generate import finish_row

    tok = tiny_tokenizer
    eos, pad = tok.eos_token_id, tok.pad_token_id
    body = tok("    return a\n", add_special_tokens=False)["input_ids"]
    stop = tok("\ndef", add_special_tokens=False)["input_ids"]
    # stopped by a stop string, then padded: trains on the body and the stop's tokens
    s = finish_row(tok, "p", [1], body + stop + [pad, pad], ["\ndef"], eos, pad)
    assert s.finished and s.completion == tok.decode(s.completion_ids) and "\ndef" not in s.completion
    assert s.generated_ids[: len(s.completion_ids)] == s.completion_ids
    assert "\ndef" in tok.decode(s.generated_ids) and pad not in s.generated_ids
    # ended by EOS: the EOS token is trained on (the choice to stop)
    s = finish_row(tok, "p", [1], body + [eos, pad], [], eos, pad)
    assert s.finished and s.generated_ids == body + [eos] and s.completion_ids == body
    # cut by the length limit: nothing added
    s = finish_row(tok, "p", [1], body, [], eos, pad)
    assert not s.finished and s.generated_ids == body


def test_build_token_batch_layout_and_empty_response():
    b = build_token_batch([[1, 2, 3], [4]], [[5], []], pad_id=0)
    assert b.prompt_width == 3
    assert b.input_ids.tolist() == [[1, 2, 3, 5], [0, 0, 4, 0]]
    assert b.attention_mask.tolist() == [[1, 1, 1, 1], [0, 0, 1, 0]]
    assert b.response_mask.tolist() == [[True], [False]]


def test_response_char_spans(tiny_tokenizer):
    text = "def f():\n    return 'Café'\n"
    ids = tiny_tokenizer(text, add_special_tokens=False)["input_ids"]
    spans = response_char_spans(tiny_tokenizer, ids)
    assert spans[0][0] == 0 and spans[-1][1] == len(text)
    assert all(a <= b for a, b in spans) and all(spans[i][1] == spans[i + 1][0] for i in range(len(spans) - 1))
    capped = response_char_spans(tiny_tokenizer, ids, text_length=5)
    assert max(e for _, e in capped) == 5


def test_trimmed_drops_columns_that_are_padding_in_every_row(tiny_tokenizer):
    b = build_token_batch([[1, 2, 3, 4], [5, 6], [7]], [[8, 9], [10], []], pad_id=0)
    sub, width = b.rows([1, 2]).trimmed()  # the long prompt (and its long response) are not in the chunk
    assert width == 1 and sub.prompt_width == 2
    assert sub.input_ids.tolist() == [[5, 6, 10], [0, 7, 0]]
    assert sub.attention_mask.tolist() == [[1, 1, 1], [0, 1, 0]]
    assert sub.response_mask.tolist() == [[True], [False]]
    # The log-probs of the kept rows do not change.
    model = build_tiny_lm(tiny_tokenizer)
    full = build_token_batch([[11, 12, 13, 14, 15, 16], [17, 18], [19, 20, 21]], [[22, 23, 24], [25, 26], [27]], 0)
    with torch.no_grad():
        lp_full = token_logprobs(model, full)["logprobs"]
        chunk, w = full.rows([1, 2]).trimmed()
        lp_chunk = token_logprobs(model, chunk)["logprobs"]
    assert chunk.prompt_width == 3 and w == 2
    mask = chunk.response_mask
    torch.testing.assert_close(lp_chunk[mask], lp_full[[1, 2], :w][mask], atol=1e-5, rtol=0)
