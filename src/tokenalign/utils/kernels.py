"""Faster kernels for the same math: what tokenalign swaps into a model before it samples
or trains, and the optimizer flags it passes.

Each one computes the same function as what it replaces (within float rounding, tested in
``tests/test_model_utils.py``); the saved model and its config are untouched. Measured on
the pep8 model on a CPU (``benchmarks/RESULTS.md``).
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Iterator

import torch

log = logging.getLogger(__name__)

__all__ = ["use_fast_kernels", "fuse_activations", "use_fp32_training_attention", "fused_optimizer_kwargs",
           "autocast_linear_weights", "decode_attention", "ATTENTION_NAME"]

# The attention implementation registered with transformers by ``use_fp32_training_attention``.
ATTENTION_NAME = "tokenalign_sdpa"


def use_fast_kernels(model) -> None:
    """Apply every swap below that fits ``model`` (a causal LM, a seq2seq LM, a value or reward
    model around one; wrappers included)."""
    fuse_activations(model)
    use_fp32_training_attention(model)


def fuse_activations(model) -> int:
    """Swap tanh-approximate GELUs written as Python arithmetic (GPT-2's ``gelu_new``: seven
    element-wise kernels forward, more backward, each a pass over the MLP's activations) for
    the same function as one fused kernel (transformers' ``GELUTanh``, ``F.gelu(approximate=
    "tanh")``; equal within float rounding, ~5e-7): 2.8x faster forward + backward on the
    pep8 model's MLP on a CPU (``benchmarks/bench_kernels.py``). The saved config is
    untouched. Returns how many modules were swapped."""
    from transformers.activations import FastGELUActivation, GELUTanh, NewGELUActivation

    swapped = 0
    for module in model.modules():
        for name, child in list(module.named_children()):
            if type(child) in (NewGELUActivation, FastGELUActivation):
                setattr(module, name, GELUTanh())
                swapped += 1
    return swapped


def fused_optimizer_kwargs(device) -> dict:
    """``{"fused": True}`` where torch has fused Adam/AdamW kernels for ``device`` (CPU and
    CUDA): one kernel over all parameters instead of a Python loop of element-wise ops per
    tensor (the pep8 model's AdamW step 4.3x faster on a CPU: ``benchmarks/bench_kernels.py``).
    The same update."""
    import torch

    return {"fused": True} if torch.device(device).type in ("cpu", "cuda") else {}


def decode_attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, attention_mask: torch.Tensor | None,
                     scaling: float | None = None) -> torch.Tensor:
    """Attention of one query per row (a decoding step) as two batched matmuls: what SDPA
    computes, for ``query`` [rows, heads, 1, dim] and ``key`` / ``value`` [rows, kv heads,
    positions, dim] (grouped-query attention when there are fewer kv heads: query head h
    reads kv head h // group, as ``repeat_kv``), ``attention_mask`` SDPA's (bool, True
    attends, or additive; broadcast over heads, or one per head). Returns [rows, 1, heads,
    dim], as transformers' attention functions do.

    On a CPU, SDPA's flash kernel runs per (row, head) and copies a strided KV cache first;
    here the scores are one matmul over every row and head, which reads keys stored
    transposed (``key.transpose(-1, -2)`` contiguous along positions: the sampler's cache)
    without a copy. Scores and softmax are fp32, as in SDPA; in bf16 the scores' matmul
    rounds them to bf16 first (as eager attention does)."""
    rows, heads, _, dim = query.shape
    kv_heads, positions = key.shape[1], key.shape[2]
    group = heads // kv_heads
    scale = dim**-0.5 if scaling is None else scaling
    scores = torch.matmul(query.reshape(rows, kv_heads, group, dim), key.transpose(-1, -2)).float() * scale
    if attention_mask is not None:
        if attention_mask.dim() == 4 and attention_mask.shape[1] == heads and group > 1:
            attention_mask = attention_mask.reshape(attention_mask.shape[0], kv_heads, group, positions)
        if attention_mask.dtype == torch.bool:
            scores = scores.masked_fill(~attention_mask, -torch.inf)
        else:
            scores = scores + attention_mask
    weights = torch.softmax(scores, dim=-1).to(value.dtype)
    return torch.matmul(weights, value).reshape(rows, 1, heads, value.shape[-1])


def _attention(module, query, key, value, attention_mask, **kwargs):
    """transformers' SDPA attention, except that a bf16 training pass on a CPU (gradients on,
    more than one query) runs in fp32: torch's CPU flash-attention kernel is faster in fp32
    than in bf16 there (forward + backward of 16 x 4 heads x 160 positions: 1.5x,
    ``benchmarks/bench_kernels.py``). Decoding (one query) and no-grad scoring stay in bf16,
    where bf16 is faster; a decoding step without gradients on a CPU runs
    :func:`decode_attention` (1.4x faster than SDPA plus its cache copies at SmolLM2's shapes:
    64 rows, 9 heads, 3 kv heads, 130 positions)."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    if (query.shape[2] == 1 and query.device.type == "cpu" and not torch.is_grad_enabled()
            and not kwargs.get("dropout") and query.shape[1] % key.shape[1] == 0
            and all(kwargs.get(k) is None for k in ("position_bias", "softcap", "s_aux", "sinks"))):
        return decode_attention(query, key, value, attention_mask, kwargs.get("scaling")), None
    if query.device.type == "cpu" and query.dtype == torch.bfloat16 and query.shape[2] > 1 and torch.is_grad_enabled():
        if attention_mask is not None and attention_mask.is_floating_point():
            attention_mask = attention_mask.float()
        # T5's relative-position bias arrives as a keyword (bf16 under autocast) and becomes
        # SDPA's float mask: in an fp32 pass it must be fp32 too, as the mask above
        kwargs = {k: v.float() if isinstance(v, torch.Tensor) and v.is_floating_point() else v for k, v in kwargs.items()}
        with torch.autocast("cpu", enabled=False):  # autocast would cast SDPA's inputs back to bf16
            out, weights = sdpa_attention_forward(module, query.float(), key.float(), value.float(), attention_mask, **kwargs)
        return out.to(query.dtype), weights
    return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)


@functools.cache
def _register_attention() -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(ATTENTION_NAME, _attention)
    AttentionMaskInterface.register(ATTENTION_NAME, sdpa_mask)  # masks are built as for SDPA


def use_fp32_training_attention(model) -> int:
    """Switch every transformers model inside ``model`` that uses SDPA attention to
    :func:`_attention` (SDPA with fp32 training passes on a CPU under bf16 autocast; the
    same as SDPA everywhere else). Models that cannot switch keep their attention. Not saved
    with the model (a saved config still says ``sdpa``). Returns how many were switched."""
    from transformers import PreTrainedModel

    _register_attention()
    switched = 0
    for module in model.modules():
        config = getattr(module, "config", None)
        if not isinstance(module, PreTrainedModel) or getattr(config, "_attn_implementation", None) != "sdpa":
            continue
        try:
            module.set_attn_implementation(ATTENTION_NAME)
        except (ValueError, ImportError, AttributeError) as err:  # a model without the attention interface
            log.debug("keeping SDPA attention for %s: %s", type(module).__name__, err)
            continue
        switched += 1
    return switched


def _packed_linear(packed: torch.Tensor, bias: torch.Tensor | None, dtype: torch.dtype, x: torch.Tensor) -> torch.Tensor:
    """``F.linear(x, weight, bias)`` in ``dtype`` on a weight prepacked by oneDNN (``packed``)."""
    return torch.ops.mkldnn._linear_pointwise(x.to(dtype).contiguous(), packed, bias, "none", [], "")


def _can_pack(device: str, dtype: torch.dtype) -> bool:
    """Whether bf16 weights on ``device`` can be prepacked for oneDNN's CPU matmul."""
    return (device == "cpu" and dtype == torch.bfloat16 and torch.backends.mkldnn.is_available()
            and torch.ops.mkldnn._is_mkldnn_bf16_supported())


@contextlib.contextmanager
def autocast_linear_weights(model, rows: int = 64) -> Iterator[int]:
    """Inside an enabled autocast, and without gradients: run ``model``'s ``nn.Linear`` layers
    on their weights cast once to the autocast dtype, for as long as the block runs.

    Autocast casts an fp32 weight at every call (it caches no cast without gradients): a
    sampler decoding one token per step re-reads and re-writes every weight each step (28 ms
    of a ~300 ms step of SmolLM2-135M at 64 rows on 1 CPU core, ``benchmarks/RESULTS.md``).
    Autocast would cast these weights to the same values, so the outputs are unchanged;
    only ``nn.Linear`` weights are swapped (an embedding tied to the LM head keeps its fp32
    weight, norms their fp32 scales). Yields how many weights were swapped (0 outside
    autocast, with gradients on, or for a sharded (FSDP) model).

    In bf16 on a CPU the cast weights are also prepacked into oneDNN's blocked layout (for
    matmuls of about ``rows`` rows), and those layers call oneDNN's linear on them: the same
    bf16 matmul with fp32 accumulation, without reordering the weight at every call (1.1x on
    SmolLM2's layers at 64 rows, 1.25x on its LM head). A layer whose ``forward`` was already
    replaced (an accelerate hook) keeps it."""
    params = list(model.parameters())
    device = params[0].device.type if params else "cpu"
    swapped: list[tuple[torch.nn.Module, torch.Tensor]] = []
    packed: list[torch.nn.Module] = []
    if (params and torch.is_autocast_enabled(device) and not torch.is_grad_enabled()
            and all(type(p) is torch.nn.Parameter for p in params)
            and not any("FullyShardedDataParallel" in type(m).__name__ for m in model.modules())):
        dtype = torch.get_autocast_dtype(device)
        pack = _can_pack(device, dtype)
        casts: dict[int, torch.Tensor] = {}  # one copy of a weight two layers share
        packs: dict[int, torch.Tensor] = {}
        for module in model.modules():
            weight = module._parameters.get("weight") if isinstance(module, torch.nn.Linear) else None
            if weight is None or weight.dtype != torch.float32 or weight.device.type != device:
                continue
            casts.setdefault(id(weight), weight.detach().to(dtype))
            swapped.append((module, weight))
            module._parameters["weight"] = casts[id(weight)]
            if pack and "forward" not in module.__dict__:
                if id(weight) not in packs:
                    packs[id(weight)] = torch.ops.mkldnn._reorder_linear_weight(casts[id(weight)], rows)
                bias = module.bias.detach().to(dtype) if module.bias is not None else None
                module.forward = functools.partial(_packed_linear, packs[id(weight)], bias, dtype)
                packed.append(module)
    try:
        yield len(swapped)
    finally:
        for module in packed:
            del module.forward
        for module, weight in swapped:
            module._parameters["weight"] = weight
