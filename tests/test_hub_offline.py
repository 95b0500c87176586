"""Hub ids offline: with ``HF_HUB_OFFLINE`` set, a model in the local Hugging Face cache
loads, and one that is not fails at once in one line (instead of retries or a long
transformers error)."""

from __future__ import annotations

import time

import pytest

from conftest import build_tiny_lm
from tokenalign.errors import TokenalignError
from tokenalign.utils.models import check_model_path, load_causal_lm


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    """An empty Hugging Face hub cache in ``tmp_path``, the hub offline."""
    from huggingface_hub import constants

    cache = tmp_path / "hub"
    cache.mkdir()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))  # read at call time by huggingface_hub and transformers
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    return cache


def test_a_hub_id_outside_the_cache_fails_at_once_offline(hub_cache, capsys):
    from tokenalign.cli import main

    start = time.perf_counter()
    with pytest.raises(TokenalignError, match="^model 'org/name' is not in the local Hugging Face cache and HF_HUB_OFFLINE is set$"):
        load_causal_lm("org/name")
    assert time.perf_counter() - start < 2
    assert main(["eval", "--model", "org/absent", "--quick", "--out", str(hub_cache.parent / "e")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "'org/absent' is not in the local Hugging Face cache" in err[0]


def test_a_cached_hub_model_loads_offline(hub_cache, tiny_tokenizer):
    revision = "0123456789abcdef0123456789abcdef01234567"
    repo = hub_cache / "models--org--tiny"
    snapshot = repo / "snapshots" / revision
    build_tiny_lm(tiny_tokenizer).save_pretrained(snapshot)
    tiny_tokenizer.save_pretrained(snapshot)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(revision)

    check_model_path("org/tiny")
    model, tokenizer = load_causal_lm("org/tiny")
    assert model.config.n_layer == 2 and tokenizer.pad_token is not None
