"""Atomic, exactly-resumable training checkpoints without untrusted pickles: the one
checkpoint format of every training loop (policy, reward model, pretraining).

A checkpoint is a folder: one subfolder per model (``policy/``, ``value/``, ``model/``:
whatever each model's save function writes, safetensors),
``optimizer.pt`` (optimizer + scheduler state and RNG states, loaded with
``torch.load(weights_only=True)``, which refuses arbitrary objects) and ``state.json``
(step, epoch, position in the epoch, metrics), plus whatever ``extra`` writes (e.g. an
objective's own state). The folder is written beside the target
and swapped in with a rename, so a kill at any moment leaves the previous checkpoint whole.

Several processes (:func:`save_distributed_checkpoint`): accelerate gathers what is
spread over them, and the main process writes the same folder. Each model's full state
dict comes from ``Accelerator.get_state_dict`` (FSDP and ZeRO-3 shards gathered; under
DDP the replica's own), the optimizer's from torch's ``get_optimizer_state_dict`` with
``full_state_dict`` under FSDP (its states are sharded like the parameters), and every
process's RNG states are kept (``rng_by_rank``), so each rank resumes its own streams.

Why not accelerate's ``save_state`` / ``load_state``: they write the optimizer with
``torch.save`` and the RNG states as a pickle per process, loaded with
``weights_only=False`` (accelerate's ``custom_checkpoint_*.pkl`` always so); they write
into the target folder in place (a kill leaves half a checkpoint); and they would be a
second format beside this one. So accelerate gathers, and this module writes: one format,
atomic, tensors and plain data only.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tokenalign.errors import TokenalignError
from tokenalign.utils.io import atomic_path
from tokenalign.utils.torch_files import load_weights_only

__all__ = ["save_checkpoint", "load_checkpoint", "save_distributed_checkpoint", "gathered_state_dict", "rng_state",
           "set_rng_state"]


def rng_state() -> dict[str, Any]:
    """The torch (CPU and each CUDA device)/numpy/python RNG states, as tensors and plain data."""
    np_state = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy_keys": torch.from_numpy(np_state[1].astype(np.int64)),
        "numpy_pos": int(np_state[2]),
        "python": json.dumps(random.getstate()),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    cuda = state.get("cuda")
    if cuda is not None and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)
    keys = state["numpy_keys"].numpy().astype(np.uint32)
    np.random.set_state(("MT19937", keys, state["numpy_pos"], 0, 0.0))
    py = json.loads(state["python"])
    random.setstate((py[0], tuple(py[1]), py[2]))


def save_checkpoint(
    path: str | Path,
    models: Mapping[str, Callable[[Path], Any]],
    optimizer: torch.optim.Optimizer | Mapping[str, Any],
    scheduler: Any | None,
    state: dict[str, Any],
    extra: Callable[[Path], Any] | None = None,
    rng_by_rank: Sequence[dict[str, Any]] | None = None,
) -> Path:
    """Write a checkpoint folder atomically; ``models[name](dir)`` writes each model's
    weights into ``path/name``, ``extra(folder)`` anything else. ``optimizer``: the
    optimizer, or its (gathered) state dict; ``rng_by_rank``: every process's RNG states."""
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.mkdir(parents=True)
        for name, save_model in models.items():
            save_model(tmp / name)
        blob = {
            "optimizer": optimizer if isinstance(optimizer, Mapping) else optimizer.state_dict(),
            "scheduler": scheduler.state_dict() if scheduler is not None else None,
            "rng": rng_state(),
        }
        if rng_by_rank is not None:
            blob["rng_by_rank"] = list(rng_by_rank)
        torch.save(blob, tmp / "optimizer.pt")
        if extra is not None:
            extra(tmp)
        (tmp / "state.json").write_text(json.dumps(state, indent=2) + "\n")
    return path


def _sharding(accelerator) -> str:
    """``fsdp``, ``deepspeed`` or ``""`` (a replica per process: DDP, or one process)."""
    from accelerate.utils import DistributedType

    kind = accelerator.distributed_type
    if kind == DistributedType.FSDP:
        return "fsdp"
    return "deepspeed" if kind == DistributedType.DEEPSPEED else ""


def _inner_optimizer(optimizer):
    """The torch optimizer inside accelerate's ``AcceleratedOptimizer``."""
    return getattr(optimizer, "optimizer", optimizer)


def gathered_state_dict(accelerator, model) -> dict[str, torch.Tensor]:
    """The full state dict of ``model`` (as passed through ``accelerator.prepare``), gathered
    by accelerate from every process that holds a shard of it. A collective: every process
    calls it; only the main process's result is complete under FSDP."""
    return accelerator.get_state_dict(model)


def save_distributed_checkpoint(
    accelerator,
    path: str | Path,
    models: Mapping[str, tuple[Any, Callable[[Path, dict[str, torch.Tensor]], Any]]],
    optimizer,
    scheduler: Any | None,
    state: dict[str, Any],
    extra: Callable[[Path], Any] | None = None,
) -> Path:
    """:func:`save_checkpoint` for a run of one or more processes; every process calls it.

    ``models[name] = (prepared model, save(folder, state_dict))``: accelerate gathers each
    model's full state dict and the main process writes it with ``save``. The optimizer's
    state is gathered too under FSDP; DeepSpeed's ZeRO partitions its optimizer in its own
    format, which this checkpoint does not read or write (an error says so)."""
    sharding = _sharding(accelerator)
    if sharding == "deepspeed":
        raise TokenalignError("checkpoints under DeepSpeed ZeRO are not supported (its optimizer state is partitioned "
                              "in DeepSpeed's own format): set save_every 0 (the trained model is still saved), or use FSDP")
    accelerator.wait_for_everyone()
    states = {name: gathered_state_dict(accelerator, model) for name, (model, _) in models.items()}
    if sharding == "fsdp":
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

        prepared = [model for model, _ in models.values()]
        optimizer_state = get_optimizer_state_dict(prepared, _inner_optimizer(optimizer),
                                                   options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    else:
        optimizer_state = optimizer.state_dict()
    rng_by_rank = None
    if accelerator.num_processes > 1:
        from tokenalign.utils.accel import gather_lists

        rng_by_rank = gather_lists([rng_state()])
    if accelerator.is_main_process:
        writers = {name: (lambda folder, save=save, sd=states[name]: save(folder, sd)) for name, (_, save) in models.items()}
        save_checkpoint(path, writers, optimizer_state, scheduler, state, extra, rng_by_rank)
    accelerator.wait_for_everyone()
    return Path(path)


def load_checkpoint(
    path: str | Path,
    optimizer: torch.optim.Optimizer,
    scheduler: Any | None,
    accelerator=None,
    models: Sequence[Any] = (),
) -> dict[str, Any]:
    """Restore optimizer, scheduler and RNG states; returns ``state.json``.

    The caller loads the model weights from ``path / name`` itself (before building the
    optimizer), since how depends on the model class. In a run of several processes
    (``accelerator``), each process takes its own RNG states when the checkpoint has as
    many as there are processes (rank 0's otherwise), and under FSDP the full optimizer
    state is sharded over ``models`` (the prepared models the optimizer steps) again.
    """
    path = Path(path)
    blob = load_weights_only(path / "optimizer.pt")  # a refused or corrupt file: one line naming it
    if accelerator is not None and _sharding(accelerator) == "fsdp":
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

        set_optimizer_state_dict(list(models), _inner_optimizer(optimizer), blob["optimizer"],
                                 options=StateDictOptions(full_state_dict=True))
    else:
        optimizer.load_state_dict(blob["optimizer"])
    if scheduler is not None and blob.get("scheduler") is not None:
        scheduler.load_state_dict(blob["scheduler"])
    rng = blob["rng"]
    by_rank = blob.get("rng_by_rank")
    if accelerator is not None and by_rank and len(by_rank) == accelerator.num_processes:
        rng = by_rank[accelerator.process_index]
    set_rng_state(rng)
    return json.loads((path / "state.json").read_text())
