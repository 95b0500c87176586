"""A run's JSONL log of per-iteration rows (metrics.jsonl, rollout_lists.jsonl), and
the one-line form of a row that training loops log.

Every row carries an ``iteration`` (reward learning's rows: a ``step``). A killed run
resumes from its last checkpoint (or starts over when it has none), so rows written after
it (by iterations that are redone) must go: :meth:`MetricsWriter.trim`, called on every
start, drops them in one atomic rewrite, leaving the kept lines byte for byte as they
were. A kill in the middle of an append leaves a torn last line: :meth:`~MetricsWriter.rows`
skips it and ``trim`` drops it, with a warning.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from tokenalign.utils.io import append_jsonl, atomic_write_text

log = logging.getLogger(__name__)

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

    def _lines(self) -> list[tuple[str, dict[str, Any]]]:
        """Each line (with its newline) and its row; a torn last line (a kill in the middle of
        an append: no newline, or not JSON) is left out with a warning. A bad line elsewhere
        is not a kill's doing: it raises."""
        if not self.path.is_file():
            return []
        lines = self.path.read_text(encoding="utf-8").splitlines(keepends=True)
        out = []
        for i, line in enumerate(lines):
            if not line.strip():
                continue
            last = i == len(lines) - 1
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                if not last:
                    raise ValueError(f"{self.path}:{i + 1}: not a JSON row") from None
                row = None
            if last and (row is None or not line.endswith("\n")):
                log.warning("%s: dropping its torn last line (a kill in the middle of a write): %.60r", self.path, line)
                continue
            out.append((line, row))
        return out

    def rows(self) -> list[dict[str, Any]]:
        """Every row, in order (none when the file does not exist; a torn last line skipped)."""
        return [row for _, row in self._lines()]

    def trim(self, keep_through_iteration: int, key: str = "iteration") -> None:
        """Drop the rows of iterations after ``keep_through_iteration`` (a row without an
        iteration counts as iteration 0) and a torn last line, atomically; the kept lines are
        unchanged. ``key``: the counter rows carry (``step`` for reward learning's rows).
        A run calls it on every start: with its checkpoint's counter, or 0 without one."""
        if not self.is_main_process or not self.path.is_file():
            return
        lines = self._lines()
        keep = [line for line, row in lines if row.get(key, 0) <= keep_through_iteration]
        if len(keep) < len(lines):
            log.info("%s: dropping %d rows after %s %d (they are redone)", self.path.name, len(lines) - len(keep), key,
                     keep_through_iteration)
        text = "".join(keep)
        if text != self.path.read_text(encoding="utf-8"):
            atomic_write_text(self.path, text)
