"""Typed records of every data format, with per-record validation.

Field names follow TRL's conventions. Each ``from_row`` checks one raw row (a mapping) and
raises :class:`~tokenalign.errors.DataError` naming the field; the loader adds the file
and line. Responses must be non-empty (whitespace-only counts as empty); prompts may be "".
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any, ClassVar

from tokenalign.errors import DataError

__all__ = [
    "PairRecord",
    "RankedRecord",
    "EditRecord",
    "PromptRecord",
    "SupervisedRecord",
    "TextRecord",
    "RECORD_TYPES",
    "split_shared_prefix",
]

ASSISTANT_MARKER = "\n\nAssistant:"


def _string(row: Mapping[str, Any], field: str, *, non_empty: bool) -> str:
    if field not in row or row[field] is None:
        raise DataError("missing", field=field)
    value = row[field]
    if not isinstance(value, str):
        raise DataError(f"must be a string, got {type(value).__name__}", field=field)
    if non_empty and not value.strip():
        raise DataError("is empty", field=field)
    return value


def _string_list(row: Mapping[str, Any], field: str) -> list[str]:
    if field not in row or row[field] is None:
        raise DataError("missing", field=field)
    value = row[field]
    if not isinstance(value, (list, tuple)):
        raise DataError(f"must be a list of strings, got {type(value).__name__}", field=field)
    for i, item in enumerate(value):
        if not isinstance(item, str):
            raise DataError(f"item {i} must be a string, got {type(item).__name__}", field=field)
        if not item.strip():
            raise DataError(f"item {i} is empty", field=field)
    return list(value)


def _score_list(row: Mapping[str, Any], field: str) -> list[float]:
    if field not in row or row[field] is None:
        raise DataError("missing", field=field)
    value = row[field]
    if not isinstance(value, (list, tuple)):
        raise DataError(f"must be a list of numbers, got {type(value).__name__}", field=field)
    out = []
    for i, item in enumerate(value):
        if isinstance(item, bool) or not isinstance(item, (int, float)):
            raise DataError(f"item {i} must be a number, got {item!r}", field=field)
        if not math.isfinite(item):
            raise DataError(f"item {i} must be finite, got {item}", field=field)
        out.append(float(item))
    return out


def split_shared_prefix(chosen: str, rejected: str) -> tuple[str, str, str]:
    """Split two whole dialogues that share a prefix into (prompt, chosen, rejected).

    The prompt ends with the last ``"\\n\\nAssistant:"`` inside the common prefix (HH-RLHF);
    without one, at the last line break or space of the common prefix (possibly "").
    """
    n = 0
    for a, b in zip(chosen, rejected):
        if a != b:
            break
        n += 1
    common = chosen[:n]
    cut = common.rfind(ASSISTANT_MARKER)
    if cut >= 0:
        cut += len(ASSISTANT_MARKER)
    else:
        cut = max(common.rfind("\n"), common.rfind(" ")) + 1
    if n == len(chosen) or n == len(rejected):  # one is a prefix of the other: keep both non-empty
        cut = min(cut, max(0, min(len(chosen), len(rejected)) - 1))
        while cut > 0 and not (chosen[cut:].strip() and rejected[cut:].strip()):
            cut -= 1
    return chosen[:cut], chosen[cut:], rejected[cut:]


@dataclasses.dataclass(frozen=True)
class PairRecord:
    """``prompt``, ``chosen`` (preferred), ``rejected``."""

    prompt: str
    chosen: str
    rejected: str
    FORMAT: ClassVar[str] = "pairs"
    FIELDS: ClassVar[tuple[str, ...]] = ("prompt", "chosen", "rejected")

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> "PairRecord":
        if "prompt" not in row and "chosen" in row and "rejected" in row:
            chosen = _string(row, "chosen", non_empty=True)
            rejected = _string(row, "rejected", non_empty=True)
            prompt, chosen, rejected = split_shared_prefix(chosen, rejected)
            row = {"prompt": prompt, "chosen": chosen, "rejected": rejected}
        return cls(
            _string(row, "prompt", non_empty=False),
            _string(row, "chosen", non_empty=True),
            _string(row, "rejected", non_empty=True),
        )


@dataclasses.dataclass(frozen=True)
class RankedRecord:
    """``prompt``, ``responses`` (K >= 2), ``scores`` (higher is better, ties allowed)."""

    prompt: str
    responses: tuple[str, ...]
    scores: tuple[float, ...]
    FORMAT: ClassVar[str] = "ranked"
    FIELDS: ClassVar[tuple[str, ...]] = ("prompt", "responses", "scores")

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> "RankedRecord":
        prompt = _string(row, "prompt", non_empty=False)
        responses = _string_list(row, "responses")
        scores = _score_list(row, "scores")
        if len(responses) < 2:
            raise DataError(f"needs K >= 2 responses, got {len(responses)}", field="responses")
        if len(scores) != len(responses):
            raise DataError(f"has {len(scores)} scores for {len(responses)} responses", field="scores")
        return cls(prompt, tuple(responses), tuple(scores))


@dataclasses.dataclass(frozen=True)
class EditRecord:
    """``prompt``, ``original`` (the worse response), ``edited`` (its minimal edit)."""

    prompt: str
    original: str
    edited: str
    FORMAT: ClassVar[str] = "edits"
    FIELDS: ClassVar[tuple[str, ...]] = ("prompt", "original", "edited")

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> "EditRecord":
        return cls(
            _string(row, "prompt", non_empty=False),
            _string(row, "original", non_empty=True),
            _string(row, "edited", non_empty=True),
        )

    def warnings(self) -> list[DataError]:
        if self.original == self.edited:
            return [DataError("is identical to 'original' (no edit, no signal)", field="edited")]
        return []


@dataclasses.dataclass(frozen=True)
class PromptRecord:
    """``prompt`` (may be empty: unconditional generation)."""

    prompt: str
    FORMAT: ClassVar[str] = "prompts"
    FIELDS: ClassVar[tuple[str, ...]] = ("prompt",)

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> "PromptRecord":
        return cls(_string(row, "prompt", non_empty=False))


@dataclasses.dataclass(frozen=True)
class SupervisedRecord:
    """``prompt``, ``completion``."""

    prompt: str
    completion: str
    FORMAT: ClassVar[str] = "supervised"
    FIELDS: ClassVar[tuple[str, ...]] = ("prompt", "completion")

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> "SupervisedRecord":
        return cls(_string(row, "prompt", non_empty=False), _string(row, "completion", non_empty=True))


@dataclasses.dataclass(frozen=True)
class TextRecord:
    """``text``: a document, scored per segment later (PHF)."""

    text: str
    FORMAT: ClassVar[str] = "text"
    FIELDS: ClassVar[tuple[str, ...]] = ("text",)

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> "TextRecord":
        return cls(_string(row, "text", non_empty=True))


RECORD_TYPES: dict[str, type] = {
    cls.FORMAT: cls for cls in (PairRecord, RankedRecord, EditRecord, PromptRecord, SupervisedRecord, TextRecord)
}
