"""Small I/O helpers: atomic writes, so a crash never leaves half a file behind."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

__all__ = ["atomic_write_text", "atomic_write_json", "atomic_path", "append_jsonl"]


@contextmanager
def atomic_path(path: str | Path, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path`` atomically.

    Works for files and directories (a directory is swapped in with two renames). On an
    exception the temporary is removed and ``path`` is untouched.
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
            os.replace(path, old)
            os.replace(tmp, path)
            _remove(old)
        else:
            os.replace(tmp, path)
    finally:
        if tmp.exists():
            _remove(tmp)


def _remove(p: Path) -> None:
    if p.is_dir():
        import shutil

        shutil.rmtree(p)
    else:
        p.unlink()


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
