"""The built-in editors, registered on import: autopep8 and pii (scrubadub's placeholders)."""

from tokenalign.editors import autopep8_editor, pii_editor  # noqa: F401  (importing registers them)
