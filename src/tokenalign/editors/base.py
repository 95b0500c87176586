"""Automatic minimal editors: turn a worse response into a minimally edited better one."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Protocol

__all__ = ["EditResult", "Editor"]


@dataclasses.dataclass
class EditResult:
    """One edit. ``failed`` samples (unparseable, editor crash) carry ``edited == original``."""

    original: str
    edited: str
    changed: bool
    failed: bool = False
    failure: str | None = None


class Editor(Protocol):
    name: str

    def edit(self, completions: Sequence[str], prompts: Sequence[str] | None = None) -> list[EditResult]: ...
