"""Batched sampling: left padding does not change greedy completions; stop strings cut."""

from __future__ import annotations

import torch
from transformers import GPT2Config, GPT2LMHeadModel

from tokenalign.rollout.generate import SamplingConfig, generate


def tiny_lm(tokenizer) -> GPT2LMHeadModel:
    torch.manual_seed(0)
    cfg = GPT2Config(vocab_size=len(tokenizer), n_embd=32, n_layer=2, n_head=2, n_positions=128,
                     eos_token_id=tokenizer.eos_token_id, bos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    return GPT2LMHeadModel(cfg).eval()


def test_left_padded_batch_equals_one_by_one(tiny_tokenizer):
    model = tiny_lm(tiny_tokenizer)
    prompts = ["def add(a, b):\n", "x", "class Point:\n    def __init__(self, x, y):\n"]
    cfg = SamplingConfig(max_new_tokens=12, greedy=True, batch_size=8)
    batched = generate(model, tiny_tokenizer, prompts, cfg, progress=False)
    alone = [generate(model, tiny_tokenizer, [p], cfg, progress=False)[0] for p in prompts]
    assert [s.completion_ids for s in batched] == [s.completion_ids for s in alone]
    assert all(s.completion == tiny_tokenizer.decode(s.completion_ids) for s in batched)


def test_stop_strings_cut_text_and_ids(tiny_tokenizer):
    model = tiny_lm(tiny_tokenizer)
    cfg = SamplingConfig(max_new_tokens=40, greedy=True)
    full = generate(model, tiny_tokenizer, ["def f():\n"], cfg, progress=False)[0]
    assert len(full.completion) > 4
    stop = full.completion[3:5]
    cut = generate(model, tiny_tokenizer, ["def f():\n"], SamplingConfig(max_new_tokens=40, greedy=True, stop=[stop]), progress=False)[0]
    assert stop not in cut.completion and cut.finished
    assert full.completion.startswith(cut.completion)
    assert cut.completion == tiny_tokenizer.decode(cut.completion_ids)


def test_unconditional_and_sampled_generation_is_seeded(tiny_tokenizer):
    model = tiny_lm(tiny_tokenizer)
    cfg = SamplingConfig(max_new_tokens=8, temperature=1.0, top_p=1.0, seed=3)
    a = generate(model, tiny_tokenizer, ["", ""], cfg, progress=False)
    b = generate(model, tiny_tokenizer, ["", ""], cfg, progress=False)
    assert [s.completion_ids for s in a] == [s.completion_ids for s in b]
    assert all(len(s.completion_ids) <= 8 for s in a)
