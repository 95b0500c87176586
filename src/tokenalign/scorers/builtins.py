"""The built-in scorers, registered on import: pep8 (pycodestyle) and pii (scrubadub)."""

from tokenalign.scorers import pep8, pii  # noqa: F401  (importing registers them)
