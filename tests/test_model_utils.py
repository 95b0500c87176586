"""Speed-ups that must not change what a model computes: the fused GELU swap and the
fused optimizer."""

import copy

import pytest
import torch
from transformers.activations import GELUTanh, NewGELUActivation

from conftest import build_tiny_lm
from tokenalign.utils.kernels import fuse_activations, fused_optimizer_kwargs, use_fp32_training_attention


def test_fused_gelu_swap_keeps_the_function(tiny_tokenizer):
    model = build_tiny_lm(tiny_tokenizer).eval()
    fused = copy.deepcopy(model)
    n_layers = model.config.n_layer
    assert sum(isinstance(m, NewGELUActivation) for m in model.modules()) == n_layers
    assert fuse_activations(fused) == n_layers
    assert not any(isinstance(m, NewGELUActivation) for m in fused.modules())
    assert sum(isinstance(m, GELUTanh) for m in fused.modules()) == n_layers
    assert fused.config.activation_function == model.config.activation_function  # what is saved is unchanged
    ids = torch.randint(3, tiny_tokenizer.vocab_size, (3, 17), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(fused(ids).logits, model(ids).logits, atol=1e-5, rtol=1e-5)
    # Gradients match too (the swap is for training; eval mode: no dropout draws).
    model(ids, labels=ids).loss.backward()
    fused(ids, labels=ids).loss.backward()
    for (name, a), b in zip(model.named_parameters(), fused.parameters()):
        torch.testing.assert_close(b.grad, a.grad, atol=1e-5, rtol=1e-4, msg=name)
    assert fuse_activations(fused) == 0  # idempotent


def test_fused_adamw_takes_the_same_step():
    torch.manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(5, 7)), torch.nn.Parameter(torch.randn(7))]
    twins = [torch.nn.Parameter(p.detach().clone()) for p in params]
    kwargs = fused_optimizer_kwargs("cpu")
    assert kwargs == {"fused": True}
    assert fused_optimizer_kwargs("meta") == {}
    plain = torch.optim.AdamW(params, lr=1e-2, weight_decay=0.1)
    fused = torch.optim.AdamW(twins, lr=1e-2, weight_decay=0.1, **kwargs)
    for step in range(3):
        grads = [torch.randn_like(p) for p in params]
        for p, q, g in zip(params, twins, grads):
            p.grad, q.grad = g.clone(), g.clone()
        plain.step(), fused.step()
    for p, q in zip(params, twins):
        torch.testing.assert_close(q, p, atol=1e-6, rtol=1e-6)


def test_fp32_training_attention_same_function_and_dtype_where_it_should(tiny_tokenizer, monkeypatch, tmp_path):
    from transformers import AutoModelForCausalLM

    model = build_tiny_lm(tiny_tokenizer).eval()
    fast = copy.deepcopy(model)
    assert use_fp32_training_attention(fast) == 1 and fast.config._attn_implementation == "tokenalign_sdpa"
    ids = torch.randint(3, tiny_tokenizer.vocab_size, (2, 9), generator=torch.Generator().manual_seed(1))
    mask = torch.ones_like(ids)
    mask[1, :3] = 0  # left padding: the mask goes through
    # fp32 model, no autocast: exactly SDPA.
    torch.testing.assert_close(fast(ids, attention_mask=mask).logits, model(ids, attention_mask=mask).logits, atol=0, rtol=0)

    seen = []
    sdpa = torch.nn.functional.scaled_dot_product_attention

    def spy(q, *args, **kwargs):
        seen.append(q.dtype)
        return sdpa(q, *args, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", spy)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = fast(ids, attention_mask=mask).logits  # a training pass: fp32 attention
        assert set(seen) == {torch.float32}
        seen.clear()
        with torch.no_grad():
            ref = model(ids, attention_mask=mask).logits  # plain SDPA in bf16
            fast(ids, attention_mask=mask)  # scoring without gradients: bf16 as before
        assert set(seen) == {torch.bfloat16}
    out.float().sum().backward()
    assert all(p.grad is not None for p in fast.parameters() if p.requires_grad)
    torch.testing.assert_close(out.float(), ref.float(), atol=0.1, rtol=0.05)  # bf16 rounding apart
    fast.save_pretrained(tmp_path)
    assert AutoModelForCausalLM.from_pretrained(tmp_path).config._attn_implementation == "sdpa"  # not saved


def test_a_missing_local_model_fails_at_once_in_one_line(tmp_path, capsys, monkeypatch):
    import time

    from huggingface_hub import constants

    from tokenalign.cli import main
    from tokenalign.errors import TokenalignError
    from tokenalign.utils.models import check_model_path, load_causal_lm

    for path in (str(tmp_path / "nowhere"), "./runs/nowhere", "../nowhere", "~/nowhere/model", "runs/x/model"):
        start = time.perf_counter()
        with pytest.raises(TokenalignError, match="model folder '.*nowhere|model folder 'runs/x/model' does not exist"):
            load_causal_lm(path)
        assert time.perf_counter() - start < 5  # no hub retries
    with monkeypatch.context() as online:  # the suite runs offline (tests/test_hub_offline.py: the offline checks)
        for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
            online.delenv(name, raising=False)
        online.setattr(constants, "HF_HUB_OFFLINE", False)
        check_model_path("gpt2")  # a hub id is left to from_pretrained
        check_model_path("org/name")
    assert main(["eval", "--model", str(tmp_path / "nowhere"), "--quick", "--out", str(tmp_path / "e")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "does not exist" in err[0]


def test_a_masked_lm_is_not_accepted_as_a_policy(tmp_path):
    from transformers import BertConfig, BertForMaskedLM

    from tokenalign.errors import TokenalignError
    from tokenalign.tasks.pep8 import base_model_path
    from tokenalign.utils.models import check_model_path, load_causal_lm

    config = BertConfig(vocab_size=64, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32)
    BertForMaskedLM(config).save_pretrained(tmp_path / "bert")
    with pytest.raises(TokenalignError, match="is a BertForMaskedLM, not a causal or sequence-to-sequence LM"):
        load_causal_lm(str(tmp_path / "bert"))
    check_model_path(base_model_path())  # the shipped GPT-2 is a policy
