"""Console output: the CLI's log handler, and training loops' progress bars and metric lines.

Library modules use ``logging``; the CLI routes tokenalign's records to one rich console
on stderr, one record a line, never wrapped (a metric line stays whole in a narrow
terminal and in a redirected log file). Training loops show a progress bar on the same
console; used from Python without a logging setup (a notebook), their metric lines are
printed above the bar instead of going nowhere.
"""

from __future__ import annotations

import logging
from typing import Any

from rich.console import Console
from rich.logging import RichHandler
from rich.text import Text

console = Console(stderr=True)

__all__ = ["console", "setup_logging", "OneLineHandler", "logs_shown", "TrainingProgress"]


class OneLineHandler(RichHandler):
    """A rich handler that prints each record as one line, ``LEVEL message``, without wrapping
    or cropping it at the console's width (rich's own layout wraps long lines mid-number)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = Text.assemble(self.get_level_text(record), " ", self.render_message(record, self.format(record)))
            self.console.print(line, soft_wrap=True)
        except Exception:
            self.handleError(record)


def setup_logging(verbosity: int = 0) -> None:
    """Route tokenalign's (and transformers') logs to stderr via rich.

    ``verbosity`` 0 is INFO for tokenalign and WARNING for third-party libraries; 1 turns
    on DEBUG for tokenalign; -1 shows only warnings.
    """
    level = logging.DEBUG if verbosity > 0 else logging.WARNING if verbosity < 0 else logging.INFO
    handler = OneLineHandler(console=console, show_path=False, show_time=False, markup=False)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)
    logging.getLogger("tokenalign").setLevel(level)


def logs_shown(logger: logging.Logger, level: int = logging.INFO) -> bool:
    """Whether ``logger``'s records at ``level`` reach a handler that takes them (the CLI's,
    or the user's own logging setup); not so by default in Python or a notebook."""
    if not logger.isEnabledFor(level):
        return False
    node: logging.Logger | None = logger
    while node is not None:
        if any(level >= h.level for h in node.handlers):
            return True
        if not node.propagate:
            break
        node = node.parent
    return False


class TrainingProgress:
    """A training loop's progress bar (on :data:`console`) and its metric lines.

    A metric line goes to ``logger``; where no handler would show it (see :func:`logs_shown`)
    it is printed above the bar instead, so ``fit()`` is never silent and no line shows
    twice. The bar is transient when lines are logged (the CLI: the log keeps them) and
    stays on screen otherwise. ``enabled=False`` (a ``progress: false`` setting, or not the
    main process): no bar, and lines only go to the logger.
    """

    def __init__(self, logger: logging.Logger, description: str, total: int, completed: int = 0, enabled: bool = True) -> None:
        from rich.progress import Progress

        self.logger = logger
        self.enabled = enabled
        self.logged = logs_shown(logger)
        self.bar = Progress(console=console, transient=self.logged, disable=not enabled)
        self.task = self.bar.add_task(description, total=total, completed=completed)

    def __enter__(self) -> "TrainingProgress":
        self.bar.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.bar.stop()

    def update(self, **kwargs: Any) -> None:
        """``Progress.update`` of the bar's task (``completed=``, ``advance=``, ``description=``)."""
        self.bar.update(self.task, **kwargs)

    def line(self, message: str, *args: Any) -> None:
        """A metric line, ``message % args``: logged, or printed above the bar when no log shows it."""
        if self.logged or not self.enabled:
            self.logger.info(message, *args)
        else:
            self.bar.console.print(message % args if args else message, soft_wrap=True, markup=False, highlight=False)
