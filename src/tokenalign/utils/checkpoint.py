"""Atomic, exactly-resumable training checkpoints without untrusted pickles: the one
checkpoint format of every training loop (policy, reward model, pretraining).

A checkpoint is a folder: one subfolder per model (``policy/``, ``value/``, ``model/``:
whatever each model's save function writes, safetensors),
``optimizer.pt`` (optimizer + scheduler state and RNG states, loaded with
``torch.load(weights_only=True)``, which refuses arbitrary objects) and ``state.json``
(step, epoch, position in the epoch, metrics), plus whatever ``extra`` writes (e.g. an
objective's own state). The folder is written beside the target
and swapped in with a rename, so a kill at any moment leaves the previous checkpoint whole.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tokenalign.utils.io import atomic_path
from tokenalign.utils.torch_files import load_weights_only

__all__ = ["save_checkpoint", "load_checkpoint", "rng_state", "set_rng_state"]


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
    optimizer: torch.optim.Optimizer,
    scheduler: Any | None,
    state: dict[str, Any],
    extra: Callable[[Path], Any] | None = None,
) -> Path:
    """Write a checkpoint folder atomically; ``models[name](dir)`` writes each model's
    weights into ``path/name``, ``extra(folder)`` anything else."""
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.mkdir(parents=True)
        for name, save_model in models.items():
            save_model(tmp / name)
        torch.save(
            {
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict() if scheduler is not None else None,
                "rng": rng_state(),
            },
            tmp / "optimizer.pt",
        )
        if extra is not None:
            extra(tmp)
        (tmp / "state.json").write_text(json.dumps(state, indent=2) + "\n")
    return path


def load_checkpoint(
    path: str | Path,
    optimizer: torch.optim.Optimizer,
    scheduler: Any | None,
) -> dict[str, Any]:
    """Restore optimizer, scheduler and RNG states; returns ``state.json``.

    The caller loads the model weights from ``path / name`` itself (before building the
    optimizer), since how depends on the model class.
    """
    path = Path(path)
    blob = load_weights_only(path / "optimizer.pt")  # a refused or corrupt file: one line naming it
    optimizer.load_state_dict(blob["optimizer"])
    if scheduler is not None and blob.get("scheduler") is not None:
        scheduler.load_state_dict(blob["scheduler"])
    set_rng_state(blob["rng"])
    return json.loads((path / "state.json").read_text())
