"""A run's JSONL log of per-iteration rows (metrics.jsonl, rollout_lists.jsonl), and
the one-line form of a row that training loops log.

Every row carries an ``iteration`` (reward learning's rows: a ``step``). A killed run
resumes from its last checkpoint, so rows written after it (by iterations that are
redone) must go: :meth:`MetricsWriter.trim` drops them in one atomic rewrite, leaving the
kept lines byte for byte as they were.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tokenalign.utils.io import append_jsonl, atomic_write_text

__all__ = ["MetricsWriter", "format_metrics"]


def format_metrics(row: dict[str, Any], skip: tuple[str, ...] = ("iteration",)) -> str:
    """``key=value`` pairs on one line, numbers to 4 significant digits: a metric line that
    reads at a glance and that a console has no reason to wrap (no JSON, no spaces inside a value)."""
    def value(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.4g}"
        return str(v).replace(" ", "_")

    return " ".join(f"{k}={value(v)}" for k, v in row.items() if k not in skip)


class MetricsWriter:
    """Appends rows to ``path`` (one JSON object a line) on the main process only.

    ``is_main_process=False`` (another process of a distributed run) makes ``append`` and
    ``trim`` do nothing, so one file gets one copy of each row; ``rows`` reads on any process.
    """

    def __init__(self, path: str | Path, is_main_process: bool = True) -> None:
        self.path = Path(path)
        self.is_main_process = is_main_process

    def exists(self) -> bool:
        """Whether the file exists (a run that has written rows, or is resuming)."""
        return self.path.is_file()

    def append(self, row: dict[str, Any]) -> None:
        """Append one row and flush it, so it survives a crash."""
        if self.is_main_process:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            append_jsonl(self.path, row)

    def rows(self) -> list[dict[str, Any]]:
        """Every row, in order (none when the file does not exist)."""
        if not self.path.is_file():
            return []
        return [json.loads(line) for line in self.path.read_text(encoding="utf-8").splitlines() if line.strip()]

    def trim(self, keep_through_iteration: int, key: str = "iteration") -> None:
        """Drop the rows of iterations after ``keep_through_iteration`` (a row without an
        iteration counts as iteration 0), atomically; the kept lines are unchanged. ``key``:
        the counter rows carry (``step`` for reward learning's rows)."""
        if not self.is_main_process or not self.path.is_file():
            return
        keep = [line for line in self.path.read_text(encoding="utf-8").splitlines(keepends=True)
                if line.strip() and json.loads(line).get(key, 0) <= keep_through_iteration]
        atomic_write_text(self.path, "".join(keep))
