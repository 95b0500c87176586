"""The shipped pep8 tokenizer and base model, and the ``tokenalign pretrain`` command."""

from __future__ import annotations

import json
import math

import pytest
import torch

from tokenalign.tasks.pep8 import base_model_path, load_base_model, load_tokenizer
from tokenalign.tasks.pep8.corpus import read_corpus

TINY = [
    "vocab_size=300", "n_layer=1", "n_embd=32", "n_head=2", "block_size=32", "batch_size=4",
    "warmup_steps=1", "eval_every=2", "eval_blocks=4", "save_every=100", "max_train_files=3",
    "mixed_precision=no",
]


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer()


def test_loaders_give_the_shipped_model_in_eval_mode():
    model = load_base_model()
    assert not model.training and model.dtype == torch.float32
    info = json.loads((base_model_path() / "training.json").read_text())
    assert info["parameters"] == sum(p.numel() for p in model.parameters())
    assert model.config.n_positions >= 256
    for split in ("validation_loss", "test_loss"):
        assert math.isfinite(info[split]) and 1.0 < info[split] < 3.0


def test_tokenizer_special_tokens(tokenizer):
    assert tokenizer.bos_token == tokenizer.eos_token == "<|endoftext|>"
    assert tokenizer.pad_token_id is not None and tokenizer.pad_token_id != tokenizer.eos_token_id
    assert tokenizer("def f():")["input_ids"][0] != tokenizer.eos_token_id  # no BOS added to prompts


def test_tokenizer_round_trips_a_stdlib_file_exactly(tokenizer):
    # The first test-split file with non-ASCII text, whole: indentation, tabs, unicode.
    text = next(t for _, t in read_corpus("test") if any(ord(c) > 127 for c in t))
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert tokenizer.decode(ids) == text
    assert len(ids) < len(text) / 2.5  # a code BPE compresses stdlib source well


def test_indentation_runs_are_single_tokens(tokenizer):
    for width in (4, 8, 12):
        ids = tokenizer("\n" + " " * width + "return x", add_special_tokens=False)["input_ids"]
        assert tokenizer.decode(ids[:1]) == "\n" + " " * (width - 1)  # newline + indentation
        assert len(ids) <= 3


def _metrics(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_pretrain_command_resumes_with_the_same_loss_curve(tmp_path):
    from tokenalign.cli import main

    def run(out, *extra):
        sets = [f"out_dir={out}", "steps=3", *TINY, *extra]
        return main(["-q", "pretrain", *[a for s in sets for a in ("--set", s)]])

    assert run(tmp_path / "full") == 0
    assert run(tmp_path / "part", "stop_after_steps=2") == 0
    assert (tmp_path / "part" / "checkpoint" / "state.json").is_file()
    assert not (tmp_path / "part" / "model").exists()
    assert run(tmp_path / "part") == 0  # picks up the checkpoint
    full, part = _metrics(tmp_path / "full" / "metrics.jsonl"), _metrics(tmp_path / "part" / "metrics.jsonl")
    assert [r["step"] for r in part] == [1, 2, 3]
    assert [r["loss"] for r in part] == [r["loss"] for r in full]
    assert [r.get("val_loss") for r in part] == [r.get("val_loss") for r in full]
    info = json.loads((tmp_path / "part" / "model" / "training.json").read_text())
    assert info["tokens_seen"] == 3 * 4 * 32
    assert "--set steps=3" in info["command"]


def test_pretrain_continues_from_a_model_folder(tmp_path):
    from tokenalign.tasks.pep8.pretrain import PretrainConfig, pretrain
    from tokenalign.config import apply_overrides, from_dict

    def cfg(**kw):
        return from_dict(PretrainConfig, apply_overrides(kw, TINY))

    first = pretrain(cfg(out_dir=str(tmp_path / "a"), steps=2))
    second = pretrain(cfg(out_dir=str(tmp_path / "b"), steps=2, init_from=str(first), method_documents=True))
    info = json.loads((second / "training.json").read_text())
    assert info["continued_from"]["tokens_seen"] == 2 * 4 * 32
    assert info["tokens_seen_total"] == 4 * 4 * 32
    assert (second / "tokenizer.json").read_text() == (first / "tokenizer.json").read_text()
    assert not (tmp_path / "b" / "tokenizer").exists()  # the tokenizer came with the model
