"""One run per output folder: a lock file that names its owner, the recovery of what a
killed run left behind, and the refusal to resume a run with another config.

:func:`open_run_folder` is how every job that writes a run folder starts (``train``,
``align``, ``reward``, ``pretrain``; ``eval`` holds the lock while it writes):

1. take ``out/.lock`` (created with ``O_EXCL``; it holds the owner's pid and host). A
   second run on the same folder stops with one line naming the owner; a lock whose pid
   is no longer alive on this host is stale and taken over, with a warning;
2. undo killed atomic writes (:func:`~tokenalign.utils.io.recover_atomic_writes`):
   partial ``.NAME.*.tmp`` folders go, a ``.checkpoint.old`` left between the two renames
   of a checkpoint swap becomes ``checkpoint/`` again;
3. when the folder holds a run to resume (a checkpoint), compare its ``config.yaml`` with
   this run's config: any difference outside the job's ``may_change`` keys stops the run
   with the differences listed, unless ``allow_config_change`` (``--allow-config-change``);
4. write this run's ``config.yaml``.

In a multi-process run (``torchrun``, ``accelerate launch``: ``RANK`` is set) only rank 0
does this; the other ranks wait for it (they read the checkpoint only once it is
recovered) and stop with rank 0's one-line error when it refuses the folder.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tokenalign.errors import TokenalignError

log = logging.getLogger(__name__)

__all__ = ["RunFolderBusy", "ConfigChanged", "RunLock", "config_changes", "open_run_folder", "is_main_rank"]

LOCK_NAME = ".lock"
_CREATING_GRACE_S = 10.0  # an empty lock younger than this is a run writing its pid right now
_HELD: set[Path] = set()  # the locks this process holds (its pid in a lock it does not hold: a reused pid)


class RunFolderBusy(TokenalignError):
    """Another live run holds the output folder's lock."""


class ConfigChanged(TokenalignError):
    """The run to resume was started with another config."""


def is_main_rank() -> bool:
    """Whether this is the process that owns the run folder: rank 0 of a launched
    multi-process run, or a single process."""
    return int(os.environ.get("RANK", "0") or 0) == 0


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


class RunLock:
    """``folder/.lock`` held by this process: ``acquire`` creates it atomically (``O_EXCL``)
    with ``{"pid", "host", "started"}``; ``release`` removes it if it is still ours."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self.path = self.folder / LOCK_NAME
        self.held = False

    def _create(self) -> bool:
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as fh:
            json.dump({"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()}, fh)
            fh.flush()
            os.fsync(fh.fileno())
        return True

    def _owner(self) -> tuple[dict[str, Any] | None, str]:
        """The lock's content (None: unreadable) and its raw text."""
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None, ""
        try:
            owner = json.loads(text)
            return (owner if isinstance(owner, dict) else None), text
        except json.JSONDecodeError:
            return None, text

    def acquire(self) -> "RunLock":
        self.folder.mkdir(parents=True, exist_ok=True)
        for _ in range(3):
            if self._create():
                self.held = True
                _HELD.add(self.path.resolve())
                return self
            owner, text = self._owner()
            host = socket.gethostname()
            if owner is None:
                try:
                    age = time.time() - self.path.stat().st_mtime
                except FileNotFoundError:
                    continue  # released meanwhile: try again
                if age < _CREATING_GRACE_S:
                    raise RunFolderBusy(f"{self.folder} is being locked by another run right now ({self.path} is new); "
                                        "use another out_dir or wait for it")
                log.warning("taking over the unreadable lock %s (%.0f s old)", self.path, age)
            else:
                pid, where = int(owner.get("pid", -1)), str(owner.get("host", ""))
                if where != host:
                    raise RunFolderBusy(f"{self.folder} is in use by pid {pid} on host {where} ({self.path}); use another "
                                        "out_dir, or delete that file if that run is gone")
                mine = pid == os.getpid()
                if (mine and self.path.resolve() in _HELD) or (not mine and _pid_alive(pid)):
                    raise RunFolderBusy(f"{self.folder} is in use by another run (pid {pid} on {host}); use another "
                                        f"out_dir, or wait for it to finish")
                log.warning("taking over the stale lock %s of pid %d (no longer running on %s)", self.path, pid, host)
            if self._owner()[1] == text:  # nobody took it over meanwhile
                try:
                    self.path.unlink()
                except FileNotFoundError:
                    pass
        raise RunFolderBusy(f"could not lock {self.folder}: another run keeps taking {self.path}")

    def release(self) -> None:
        if not self.held:
            return
        _HELD.discard(self.path.resolve())
        owner, _ = self._owner()
        if owner is not None and owner.get("pid") == os.getpid() and owner.get("host") == socket.gethostname():
            try:
                self.path.unlink()
            except FileNotFoundError:
                pass
        self.held = False

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()


def _flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(data, dict):
        out: dict[str, Any] = {}
        for k, v in data.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out if out or not prefix else {prefix: {}}
    return {prefix: data}


def config_changes(saved: dict[str, Any], current: dict[str, Any], may_change: Iterable[str] = ()) -> list[str]:
    """``key: old -> new`` for each dotted key whose value differs between the saved and the
    current config (keys in only one of them: settings of another tokenalign version, or
    of another objective's section, whose change the selecting key already shows, are
    skipped), except the ``may_change`` keys and ``out_dir``."""
    allowed = set(may_change) | {"out_dir"}
    old, new = _flatten(saved), _flatten(current)
    return [f"{k}: {old[k]!r} -> {new[k]!r}" for k in new if k in old and old[k] != new[k] and k not in allowed]


@contextmanager
def open_run_folder(out: str | Path, config_yaml: str, *, may_change: Iterable[str] = (), allow_config_change: bool = False,
                    subfolders: Iterable[str] = (), lock: bool = True) -> Iterator[Path]:
    """Hold ``out`` for a run of the config ``config_yaml`` (its YAML text,
    ``tokenalign.config.config_to_yaml``; module docstring: lock, recover, compare, save
    it as config.yaml); the lock is released when the block ends, however it ends.

    ``may_change``: the dotted config keys a resumed run may change (extending a run:
    ``iterations``); ``subfolders``: folders of ``out`` with atomic writes of their own
    (align's ``guidance``), recovered too. ``lock=False``: the caller holds the lock.
    """
    from tokenalign.utils.accel import share_outcome

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if not is_main_rank():
        share_outcome(None)  # rank 0 has locked, recovered and compared (or raises its error here)
        yield out
        return
    try:
        held = RunLock(out).acquire() if lock else None
    except TokenalignError as err:
        share_outcome(err)
        raise
    try:
        try:
            _prepare_folder(out, config_yaml, may_change, allow_config_change, subfolders)
        except BaseException as err:
            share_outcome(err)
            raise
        share_outcome(None)
        yield out
    finally:
        if held is not None:
            held.release()


def _prepare_folder(out: Path, config_yaml: str, may_change: Iterable[str], allow_config_change: bool,
                    subfolders: Iterable[str]) -> None:
    """Steps 2 to 4 of the module docstring, on the process that holds the lock."""
    import yaml

    from tokenalign.utils.io import atomic_write_text, recover_atomic_writes

    for folder in (out, *(out / s for s in subfolders)):
        recover_atomic_writes(folder)
    saved_path = out / "config.yaml"
    if saved_path.is_file() and (out / "checkpoint" / "state.json").is_file():
        saved = yaml.safe_load(saved_path.read_text(encoding="utf-8")) or {}
        changes = config_changes(saved, yaml.safe_load(config_yaml) or {}, may_change)
        if changes and not allow_config_change:
            raise ConfigChanged(f"{out} holds a run started with another config; resuming would mix two runs: "
                                f"{'; '.join(changes)}. Use another out_dir, or rerun with --allow-config-change "
                                "to continue this run with the new values")
        if changes:
            log.warning("resuming %s with a changed config (allowed): %s", out, "; ".join(changes))
    atomic_write_text(saved_path, config_yaml)
