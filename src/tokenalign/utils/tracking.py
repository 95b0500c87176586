"""Experiment trackers (tensorboard, wandb, mlflow) through accelerate, offline-safe.

A run's ``report_to`` names the trackers; each metrics row a run writes to its JSONL
files also goes to them (numeric values only, at the row's iteration or step). Every
tracker writes under the run folder unless the user points it elsewhere:
``<out_dir>/tensorboard/tokenalign/`` (event files), ``<out_dir>/wandb/`` (offline
unless ``WANDB_MODE`` is set) and ``<out_dir>/mlruns/`` (unless ``MLFLOW_TRACKING_URI``
is set), so a run on a machine without network access never waits on one.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from tokenalign.errors import ConfigError

log = logging.getLogger(__name__)

__all__ = ["TRACKERS", "PROJECT", "resolve_report_to", "accelerator_kwargs", "flat_config", "Trackers"]

TRACKERS = ("tensorboard", "wandb", "mlflow")  # accelerate's names of the trackers we set up offline-safe
PROJECT = "tokenalign"  # the tracker project (wandb project, mlflow experiment, tensorboard subfolder)
_PACKAGES = {"tensorboard": "tensorboard", "wandb": "wandb", "mlflow": "mlflow"}  # pip package of each tracker


def _installed(name: str) -> bool:
    """Whether accelerate finds the tracker's package (its own check, so the two agree)."""
    from accelerate.utils import is_mlflow_available, is_tensorboard_available, is_wandb_available

    return {"tensorboard": is_tensorboard_available, "wandb": is_wandb_available, "mlflow": is_mlflow_available}[name]()


def resolve_report_to(value: str | list[str] | tuple[str, ...] | None) -> list[str]:
    """The trackers a ``report_to`` setting names: a name, a comma-separated string or a
    list of them; ``none`` (or empty) is no tracker, ``all`` every installed one.

    Raises a one-line :class:`ConfigError` for an unknown name or a tracker whose package
    is missing, so a run fails before it loads a model rather than training untracked.
    """
    if value is None:
        return []
    items = value.split(",") if isinstance(value, str) else list(value)
    names = [str(n).strip().lower() for n in items if str(n).strip()]
    if not names or names == ["none"]:
        return []
    if "all" in names:
        return [n for n in TRACKERS if _installed(n)]
    out: list[str] = []
    for name in names:
        if name not in TRACKERS:
            import difflib

            close = difflib.get_close_matches(name, TRACKERS, n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise ConfigError(f"report_to: unknown tracker {name!r}{hint}; use none, all or {', '.join(TRACKERS)}")
        if not _installed(name):
            raise ConfigError(f"report_to {name} needs the {_PACKAGES[name]} package: pip install {_PACKAGES[name]}")
        if name not in out:
            out.append(name)
    return out


def accelerator_kwargs(trackers: list[str], out_dir: str | Path | None) -> dict[str, Any]:
    """``Accelerator`` arguments that attach ``trackers`` with their files under ``out_dir``."""
    if not trackers:
        return {}
    if out_dir is None:
        raise ConfigError(f"report_to {','.join(trackers)} writes under the run folder: give the run an out_dir")
    from accelerate.utils import ProjectConfiguration

    out = Path(out_dir)
    return {"log_with": list(trackers),
            "project_config": ProjectConfiguration(project_dir=str(out), logging_dir=str(out / "tensorboard"))}


def flat_config(data: dict[str, Any]) -> dict[str, Any]:
    """A nested config mapping (``tokenalign.config.to_dict`` of a run config) as one level of
    ``a.b`` keys with scalar values, as tensorboard's hparams and mlflow's params take them
    (lists become text, None an empty string)."""
    out: dict[str, Any] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                walk(f"{prefix}.{k}" if prefix else str(k), v)
        elif value is None or isinstance(value, (list, tuple)):
            out[prefix] = "" if value is None else ",".join(str(v) for v in value)
        else:
            out[prefix] = value

    walk("", data)
    return out


class Trackers:
    """A run's trackers on its ``Accelerator``: started on first use, fed numeric rows, finished by :meth:`close`.

    ``trackers``: the resolved names (empty: every method does nothing). ``config``: the run
    config recorded with the run, as a nested mapping (``tokenalign.config.to_dict``).
    """

    def __init__(self, accelerator, trackers: list[str], out_dir: str | Path | None, config: dict[str, Any]) -> None:
        self.accelerator = accelerator
        self.names = list(trackers)
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.config = config
        self.started = False

    def start(self, step: int = 0) -> None:
        """Start the trackers once. ``step``: where a resumed run continues; tensorboard drops
        its events after it (rows of redone iterations are logged again)."""
        if self.started or not self.names:
            return
        out = self.out_dir
        init: dict[str, dict[str, Any]] = {}
        if "tensorboard" in self.names and step:
            init["tensorboard"] = {"purge_step": step + 1}
        if "wandb" in self.names:
            init["wandb"] = {"dir": str(out), "name": out.name}
            if not os.environ.get("WANDB_MODE"):
                init["wandb"]["mode"] = "offline"  # never waits on the network; `wandb sync` uploads it later
                log.info("wandb logs offline to %s (set WANDB_MODE=online to sync live)", out / "wandb")
        if "mlflow" in self.names:
            init["mlflow"] = {"run_name": out.name}
            if not os.environ.get("MLFLOW_TRACKING_URI"):
                import mlflow

                mlflow.set_tracking_uri((out / "mlruns").resolve().as_uri())
        if self.accelerator.is_main_process:
            out.mkdir(parents=True, exist_ok=True)
        self.accelerator.init_trackers(PROJECT, config=flat_config(self.config), init_kwargs=init)
        self.started = True

    def log(self, row: dict[str, Any], step: int, prefix: str = "") -> None:
        """Log the numeric values of ``row`` at ``step`` (its ``iteration``/``step`` keys are the
        x-axis, not values); ``prefix`` groups them (``guidance/``)."""
        if not self.names:
            return
        self.start()
        values = {f"{prefix}{k}": float(v) for k, v in row.items()
                  if isinstance(v, (int, float)) and k not in ("iteration", "step")}
        if values:
            self.accelerator.log(values, step=step)

    def close(self) -> None:
        """Finish every tracker (flushes and closes its files). Not ``end_training``: that also
        destroys the process group, which a job running several stages still needs."""
        if not self.started:
            return
        for tracker in self.accelerator.trackers:
            tracker.finish()
        self.accelerator.trackers.clear()
        self.started = False
