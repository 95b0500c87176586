"""Batched sampling: left padding does not change greedy completions; stop strings cut."""

from __future__ import annotations

import pytest
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
    assert all(s.completion == tiny_tokenizer.decode(s.completion_ids)[len(s.healed) :] for s in batched)


def test_stop_strings_cut_text_and_ids(tiny_tokenizer):
    model = tiny_lm(tiny_tokenizer)
    cfg = SamplingConfig(max_new_tokens=40, greedy=True)
    full = generate(model, tiny_tokenizer, ["def f():\n"], cfg, progress=False)[0]
    assert len(full.completion) > 4
    stop = full.completion[3:5]
    cut = generate(model, tiny_tokenizer, ["def f():\n"], SamplingConfig(max_new_tokens=40, greedy=True, stop=[stop]), progress=False)[0]
    assert stop not in cut.completion and cut.finished
    assert full.completion.startswith(cut.completion)
    assert cut.completion == tiny_tokenizer.decode(cut.completion_ids)[len(cut.healed) :]


def test_unconditional_and_sampled_generation_is_seeded(tiny_tokenizer):
    model = tiny_lm(tiny_tokenizer)
    cfg = SamplingConfig(max_new_tokens=8, temperature=1.0, top_p=1.0, seed=3)
    a = generate(model, tiny_tokenizer, ["", ""], cfg, progress=False)
    b = generate(model, tiny_tokenizer, ["", ""], cfg, progress=False)
    assert [s.completion_ids for s in a] == [s.completion_ids for s in b]
    assert all(len(s.completion_ids) <= 8 for s in a)


def test_length_limited_rows_are_not_finished(tiny_tokenizer):
    model = tiny_lm(tiny_tokenizer)
    samples = generate(model, tiny_tokenizer, ["def f(", "x = "], SamplingConfig(max_new_tokens=5, greedy=True), progress=False)
    for s in samples:
        assert tiny_tokenizer.eos_token_id not in s.completion_ids
        assert s.finished == (len(s.completion_ids) < 5)


def test_smaller_batches_and_temperature_zero_match_greedy(tiny_tokenizer):
    model = tiny_lm(tiny_tokenizer)
    prompts = ["def add(a, b):\n", "import os", "", "for i in range(3):\n    "]
    greedy = generate(model, tiny_tokenizer, prompts, SamplingConfig(max_new_tokens=10, greedy=True, batch_size=4), progress=False)
    zero = generate(model, tiny_tokenizer, prompts, SamplingConfig(max_new_tokens=10, temperature=0.0, batch_size=3), progress=False)
    assert [s.completion_ids for s in zero] == [s.completion_ids for s in greedy]
    assert [s.prompt for s in zero] == prompts


def test_model_generation_defaults_do_not_leak_into_sampling(tiny_tokenizer):
    """top_k=0 means no top-k filter even when the model's generation_config sets one."""
    model = tiny_lm(tiny_tokenizer)
    model.generation_config.top_k = 1  # would make every sample the greedy one
    cfg = SamplingConfig(max_new_tokens=6, temperature=1.0, top_k=0, top_p=1.0, seed=0)
    samples = generate(model, tiny_tokenizer, ["def f():\n"] * 8, cfg, progress=False)
    assert len({tuple(s.completion_ids) for s in samples}) > 1
    cfg_k1 = SamplingConfig(max_new_tokens=6, temperature=1.0, top_k=1, top_p=1.0, seed=0)
    samples = generate(model, tiny_tokenizer, ["def f():\n"] * 8, cfg_k1, progress=False)
    assert len({tuple(s.completion_ids) for s in samples}) == 1


def test_cut_at_stop_keeps_whole_tokens_before_the_stop(tiny_tokenizer):
    from tokenalign.rollout.generate import _cut_at_stop

    text = "    return a + b\ndef add(x):\n    pass\n"
    ids = tiny_tokenizer(text, add_special_tokens=False)["input_ids"]
    kept_ids, kept, stopped = _cut_at_stop(tiny_tokenizer, ids, text, ["\nclass ", "\ndef "])
    assert stopped and kept == tiny_tokenizer.decode(kept_ids)
    assert "\ndef" not in kept and text.startswith(kept)
    assert len(kept) >= len("    return a + b") - 2  # at most the token that straddles the stop is dropped
    assert _cut_at_stop(tiny_tokenizer, ids, text, ["\nwhile "]) == (ids, text, False)
    first, kept, stopped = _cut_at_stop(tiny_tokenizer, ids, text, ["    return"])
    assert (first, kept, stopped) == ([], "", True)


def test_a_prompt_longer_than_the_context_keeps_its_last_tokens(tiny_tokenizer, caplog):
    """A prompt that does not fit beside max_new_tokens is cut from the left (counted and
    warned), never a crash; a budget that leaves no room at all is a one-line error."""
    import logging

    from conftest import build_tiny_lm

    from tokenalign.errors import ConfigError
    from tokenalign.rollout.generate import SamplingConfig, generate

    model = build_tiny_lm(tiny_tokenizer, n_positions=32)
    long_prompt = "def f(x):\n" + "    x = x + 1\n" * 20
    short_prompt = "def g():\n"
    assert len(tiny_tokenizer(long_prompt)["input_ids"]) > 32
    cfg = SamplingConfig(max_new_tokens=8, temperature=1.0, top_p=1.0, seed=0, token_healing="off")
    with caplog.at_level(logging.WARNING, logger="tokenalign.rollout.generate"):
        samples = generate(model, tiny_tokenizer, [long_prompt, short_prompt], cfg, progress=False)
    assert "1 of 2 prompts do not fit" in caplog.text
    long_ids = tiny_tokenizer(long_prompt, add_special_tokens=False)["input_ids"]
    assert samples[0].prompt == long_prompt and samples[0].prompt_ids == long_ids[-24:]  # 32 - 8 kept
    assert len(samples[0].prompt_ids) + len(samples[0].generated_ids) <= 32
    assert samples[1].prompt_ids == tiny_tokenizer(short_prompt, add_special_tokens=False)["input_ids"]
    with pytest.raises(ConfigError, match="max_new_tokens=32 leaves no room for a prompt"):
        generate(model, tiny_tokenizer, [short_prompt], SamplingConfig(max_new_tokens=32), progress=False)


def test_sampling_runs_without_autograd(tiny_tokenizer):
    """No graph is built while sampling (it also selects the no-grad kernels under bf16)."""
    from conftest import build_tiny_lm

    model = build_tiny_lm(tiny_tokenizer)
    seen = []
    model.register_forward_hook(lambda *_: seen.append(torch.is_grad_enabled()))
    generate(model, tiny_tokenizer, ["def f():\n"], SamplingConfig(max_new_tokens=4, seed=0), progress=False)
    assert seen and not any(seen)
