"""One place that builds accelerate's ``Accelerator`` for every engine.

accelerate keeps its state (device, mixed precision, processes) in a process-wide
singleton, so a second ``Accelerator`` with another mixed-precision setting raises. In a
single process (tests, notebooks, one command running several stages) the state is
reset instead, with a log line; under a multi-process launcher it cannot be, and the
error says which settings disagree.
"""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger(__name__)

__all__ = ["resolve_mixed_precision", "make_accelerator"]


def resolve_mixed_precision(setting: str) -> str:
    """``auto`` -> bf16 where the CPU/GPU supports it, else fp32 (``no``)."""
    import torch

    if setting != "auto":
        return setting
    if torch.cuda.is_available():
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    cap = getattr(torch.backends.cpu, "get_cpu_capability", lambda: "")()
    return "bf16" if cap in ("AVX512", "AMX") or "AVX512" in str(cap) else "no"


def make_accelerator(mixed_precision: str = "auto", **kwargs: Any):
    """An ``Accelerator`` with ``mixed_precision`` resolved (``auto`` included)."""
    from accelerate import Accelerator, PartialState
    from accelerate.state import AcceleratorState

    from tokenalign.errors import ConfigError

    wanted = resolve_mixed_precision(mixed_precision)
    current = AcceleratorState._shared_state.get("_mixed_precision")
    if current is not None and str(current) != wanted:
        if PartialState().num_processes > 1:
            raise ConfigError(f"mixed_precision {wanted!r} differs from the {current!r} this distributed run started with; "
                              "use one setting for every stage")
        log.info("mixed precision %s -> %s: resetting accelerate's process state", current, wanted)
        AcceleratorState._reset_state()
    import os

    import torch

    if "cpu" not in kwargs and int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.cuda.is_available():
        kwargs["cpu"] = True  # accelerate only sets up multi-process CPU (gloo) when asked for the CPU
    return Accelerator(mixed_precision=wanted, **kwargs)
