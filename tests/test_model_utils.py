"""Speed-ups that must not change what a model computes: the fused GELU swap and the
fused optimizer."""

import copy

import torch
from transformers.activations import GELUTanh, NewGELUActivation

from tests.conftest import build_tiny_lm
from tokenalign.utils.models import fuse_activations, fused_optimizer_kwargs


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
