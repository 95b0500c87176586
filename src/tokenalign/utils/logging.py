"""Logging setup for the CLI: rich console handler, library modules use ``logging``."""

from __future__ import annotations

import logging

from rich.console import Console
from rich.logging import RichHandler

console = Console(stderr=True)


def setup_logging(verbosity: int = 0) -> None:
    """Route tokenalign's (and transformers') logs to stderr via rich.

    ``verbosity`` 0 is INFO for tokenalign and WARNING for third-party libraries; 1 turns
    on DEBUG for tokenalign; -1 shows only warnings.
    """
    level = logging.DEBUG if verbosity > 0 else logging.WARNING if verbosity < 0 else logging.INFO
    handler = RichHandler(console=console, show_path=False, show_time=False, markup=False)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)
    logging.getLogger("tokenalign").setLevel(level)
