"""Small I/O helpers: atomic writes, so a crash never leaves half a file behind, and the
recovery of what a kill in the middle of one leaves beside its target."""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

log = logging.getLogger(__name__)

__all__ = ["atomic_write_text", "atomic_write_json", "atomic_path", "append_jsonl", "recover_atomic_writes"]


@contextmanager
def atomic_path(path: str | Path, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path`` atomically.

    Works for files and directories (a directory is swapped in with two renames: ``path``
    to ``.NAME.old``, the temporary to ``path``). On an exception the temporary is removed
    and ``path`` is untouched; what a kill leaves (a ``.NAME.*.tmp`` temporary, or
    ``.NAME.old`` without ``path`` between the renames) :func:`recover_atomic_writes` undoes.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix + ".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    tmp.unlink()
    try:
        yield tmp
        if tmp.is_dir() and path.exists():
            old = path.with_name(f".{path.name}.old")
            if old.exists():
                _remove(old)
            _rename(path, old)
            _rename(tmp, path)
            _remove(old)
        else:
            _rename(tmp, path)
    finally:
        if tmp.exists():
            _remove(tmp)


def _rename(src: Path, dst: Path) -> None:
    os.replace(src, dst)


def _remove(p: Path) -> None:
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p)
    else:
        p.unlink()


def recover_atomic_writes(folder: str | Path, depth: int = 0) -> list[str]:
    """Undo what killed :func:`atomic_path` writes left in ``folder`` (and its subfolders,
    ``depth`` levels down): each ``.NAME.*.tmp`` temporary is removed; ``.NAME.old`` is
    renamed back to ``NAME`` when ``NAME`` is missing (a kill between the two renames of a
    folder swap), else removed (a kill before its removal). Returns what was done, one
    line each (also logged as warnings).

    Only call it while no other process writes to ``folder`` (a run holds its folder's
    :class:`~tokenalign.utils.runfolder.RunLock`): another writer's temporary would go too.
    """
    folder = Path(folder)
    done: list[str] = []
    if not folder.is_dir():
        return done
    hidden = sorted(e for e in folder.iterdir() if e.name.startswith("."))
    for p in hidden:  # .old first: a missing target comes back
        if p.name.endswith(".old") and len(p.name) > 5:
            target = p.with_name(p.name[1:-4])
            if target.exists():
                _remove(p)
                done.append(f"removed {p} (left by a kill after {target.name} was replaced)")
            else:
                _rename(p, target)
                done.append(f"recovered {target} from {p.name} (a kill interrupted its replacement)")
    for p in hidden:
        if p.name.endswith(".tmp") and p.exists():
            _remove(p)
            done.append(f"removed {p} (a partial write that a kill interrupted)")
    for line in done:
        log.warning("%s", line)
    if depth > 0:
        for sub in sorted(e for e in folder.iterdir() if e.is_dir() and not e.is_symlink() and not e.name.startswith(".")):
            done += recover_atomic_writes(sub, depth - 1)
    return done


def atomic_write_text(path: str | Path, text: str, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` via a temporary file and an atomic rename."""
    path = Path(path)
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding=encoding) as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
    return path


def atomic_write_json(path: str | Path, obj: Any, indent: int = 2) -> Path:
    """Write ``obj`` as JSON atomically."""
    return atomic_write_text(path, json.dumps(obj, indent=indent, ensure_ascii=False) + "\n")


def append_jsonl(fh_or_path: IO[str] | str | Path, record: dict[str, Any]) -> None:
    """Append one JSON record as a line and flush it (metrics survive a crash)."""
    line = json.dumps(record, ensure_ascii=False) + "\n"
    if isinstance(fh_or_path, (str, Path)):
        with open(fh_or_path, "a", encoding="utf-8") as fh:
            fh.write(line)
    else:
        fh_or_path.write(line)
        fh_or_path.flush()
