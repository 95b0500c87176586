"""One place that builds accelerate's ``Accelerator`` for every engine, and the few
collectives the jobs use outside a trainer (a share of the work per process, results
gathered back, one outcome for every process).

accelerate keeps its state (device, mixed precision, processes) in a process-wide
singleton, so a second ``Accelerator`` with another mixed-precision setting raises. In a
single process (tests, notebooks, one command running several stages) the state is
reset instead, with a log line; under a multi-process launcher it cannot be, and the
error says which settings disagree.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Any, TypeVar

T = TypeVar("T")

log = logging.getLogger(__name__)

__all__ = ["resolve_mixed_precision", "make_accelerator", "launched_processes", "process_state", "process_share",
           "gather_lists", "share_outcome", "end_processes", "check_launcher"]

_MPI_SIZES = ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "MV2_COMM_WORLD_SIZE", "MPI_LOCALNRANKS")


def launched_processes() -> int:
    """How many processes a launcher started for this run (``WORLD_SIZE``; 1 without one)."""
    return int(os.environ.get("WORLD_SIZE", "1") or 1)


def _cpu_only() -> bool:
    """Whether a launched run must ask accelerate for the CPU: it only sets up
    multi-process CPU (gloo) when asked for it."""
    import torch

    return launched_processes() > 1 and not torch.cuda.is_available()


def process_state():
    """accelerate's ``PartialState`` (the process group of a launched run, set up on first
    use; a single process otherwise)."""
    from accelerate import PartialState

    return PartialState(cpu=True) if _cpu_only() else PartialState()


def process_share(items: Sequence[T]) -> list[T]:
    """This process's share of ``items``: every ``num_processes``-th one from its rank on
    (all of them in a single process)."""
    if launched_processes() == 1:
        return list(items)
    state = process_state()
    return list(items[state.process_index :: state.num_processes])


def gather_lists(items: Sequence[T]) -> list[T]:
    """Every process's ``items``, concatenated in rank order, on every process (a
    collective: every process calls it); ``items`` itself in a single process."""
    if launched_processes() == 1:
        return list(items)
    import torch.distributed as dist

    process_state()
    parts: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(parts, list(items))
    return [x for part in parts for x in part]


def share_outcome(error: BaseException | None) -> None:
    """Make rank 0's outcome every process's: when rank 0 failed (``error``), the others
    raise the same one-line error instead of waiting forever for it (a collective)."""
    if launched_processes() == 1:
        return
    import torch.distributed as dist

    from tokenalign.errors import TokenalignError

    process_state()
    box = [None if error is None else f"{type(error).__name__}: {error}" if not isinstance(error, TokenalignError) else str(error)]
    dist.broadcast_object_list(box, src=0)
    if box[0] is not None and error is None:
        raise TokenalignError(f"rank 0 stopped: {box[0]}")


def end_processes() -> None:
    """Wait for every process and take the process group down (a gloo group alive at
    interpreter exit can abort the process); nothing in a single process."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


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
    if "cpu" not in kwargs and _cpu_only():
        kwargs["cpu"] = True
    return Accelerator(mixed_precision=wanted, **kwargs)


def check_launcher() -> None:
    """Refuse ``accelerate launch --cpu --num_processes N`` (N > 1) without MPI: accelerate
    then starts one process (it runs several CPU processes only through ``mpirun``), which
    would do all the work alone. Its traces: ``ACCELERATE_USE_CPU`` with ``MASTER_ADDR``
    (set only for N > 1) and neither ``WORLD_SIZE`` nor an MPI size."""
    from tokenalign.errors import ConfigError

    env = os.environ
    asked = env.get("ACCELERATE_USE_CPU", "").lower() in ("true", "1") and "MASTER_ADDR" in env
    if asked and "WORLD_SIZE" not in env and not any(name in env for name in _MPI_SIZES):
        raise ConfigError("`accelerate launch --cpu --num_processes N` started a single process (accelerate runs several "
                          "CPU processes only through MPI, --mpirun_hostfile); run `accelerate launch --multi_gpu "
                          "--num_processes N ...` (on a machine without GPUs it runs N CPU processes over gloo) or "
                          "`torchrun --nproc_per_node N -m tokenalign ...`")
