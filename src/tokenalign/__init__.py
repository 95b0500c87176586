"""tokenalign: align language models with token-level guidance grounded in preferences.

Sequence-level preferences (pairs, rankings, minimal edits, scored text) become
token-level rewards, which then train the language model. See README.md and
docs/architecture.md for the map of the package.
"""

from __future__ import annotations

import logging

__version__ = "0.1.0"

logging.getLogger(__name__).addHandler(logging.NullHandler())

__all__ = ["__version__"]
