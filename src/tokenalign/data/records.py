"""Typed records of every data format, with per-record validation.

Field names follow TRL's conventions. ``Record.parse(row)`` checks one raw row (a mapping
from field name to value) and returns the record plus its warnings, or raises
:class:`~tokenalign.errors.DataError` naming the field; the loader adds the file and line.

Rules shared by every format: responses (``chosen``, ``rejected``, ``responses[i]``,
``original``, ``edited``, ``completion``, ``text``) must be non-empty strings, where
whitespace-only counts as empty, and so do zero-width, byte-order-mark and NUL characters
(they look empty and tokenize to nothing useful); ``prompt`` must be a string and may be
``""``; no string (chat messages included) may hold a lone surrogate such as ``"\ud800"``
(a JSON escape, not Unicode text: tokenizers fail on it); scores must be finite numbers; a
ranked list may not give one response two different scores. Extra fields in a row are
ignored.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, TypeVar, Union

from tokenalign.errors import DataError

__all__ = [
    "ASSISTANT_MARKER",
    "PairRecord",
    "RankedRecord",
    "EditRecord",
    "PromptRecord",
    "Message",
    "Messages",
    "SupervisedRecord",
    "TextRecord",
    "Record",
    "RECORD_TYPES",
    "split_shared_prefix",
]

ASSISTANT_MARKER = "\n\nAssistant:"
_WHITESPACE = re.compile(r"\s")
_SURROGATE = re.compile("[\ud800-\udfff]")
_INVISIBLE = "\u200b\u200c\u200d\u2060\ufeff\x00"  # zero-width space/non-joiner/joiner, word joiner, BOM, NUL
_LOOKS_EMPTY = re.compile(f"[\\s{_INVISIBLE}]*")

R = TypeVar("R", bound="_RecordBase")


# ---------------------------------------------------------------------------------------
# Field checks: each returns the clean value or raises DataError(field=...).


def _value(row: Mapping[str, Any], field: str) -> Any:
    if field not in row:
        raise DataError("missing", field=field)
    if row[field] is None:
        raise DataError("missing (null)", field=field)
    return row[field]


def _text(value: str, field: str, where: str = "") -> str:
    """``value``, unless it holds a lone surrogate (``where`` prefixes the message: "item 2 ")."""
    bad = _SURROGATE.search(value)
    if bad:
        raise DataError(f"{where}holds a lone surrogate \\u{ord(bad.group()):04x} at character {bad.start() + 1} "
                        "(not Unicode text: a JSON escape of half a character?)", field=field)
    return value


def _emptiness(value: str) -> str | None:
    """Why a response counts as empty, or None."""
    if not value:
        return "is empty"
    if not value.strip():
        return "is empty (whitespace only)"
    if _LOOKS_EMPTY.fullmatch(value):
        return "is empty (only whitespace, zero-width, byte-order-mark or NUL characters)"
    return None


def _type_name(value: Any) -> str:
    if isinstance(value, list) and value and all(isinstance(v, Mapping) for v in value):
        return "a list of messages (chat format is supported for prompts only: apply the chat template first)"
    return type(value).__name__


@dataclasses.dataclass(frozen=True)
class Message:
    """One chat message of a conversational prompt (TRL's ``{"role": ..., "content": ...}``)."""

    role: str
    content: str


Messages = tuple[Message, ...]


def _messages(value: Sequence[Any], field: str) -> Messages:
    """A conversational field: a non-empty list of ``{"role": str, "content": str}``."""
    if not value:
        raise DataError("is an empty list of messages", field=field)
    out = []
    for i, item in enumerate(value):
        if not isinstance(item, Mapping):
            raise DataError(f"message {i} must be an object with 'role' and 'content', got {type(item).__name__}", field=field)
        for key in ("role", "content"):
            if not isinstance(item.get(key), str):
                raise DataError(f"message {i}: '{key}' must be a string, got {type(item.get(key)).__name__}", field=field)
            _text(item[key], field, f"message {i}: '{key}' ")
        out.append(Message(item["role"], item["content"]))
    return tuple(out)


def _string(row: Mapping[str, Any], field: str, *, non_empty: bool) -> str:
    value = _value(row, field)
    if not isinstance(value, str):
        raise DataError(f"must be a string, got {_type_name(value)}", field=field)
    if non_empty and (why := _emptiness(value)):
        raise DataError(why, field=field)
    return _text(value, field)


def _list(row: Mapping[str, Any], field: str, what: str) -> Sequence[Any]:
    value = _value(row, field)
    if not isinstance(value, (list, tuple)):
        raise DataError(f"must be a list of {what}, got {_type_name(value)}", field=field)
    return value


def _string_list(row: Mapping[str, Any], field: str) -> tuple[str, ...]:
    value = _list(row, field, "strings")
    for i, item in enumerate(value):
        if not isinstance(item, str):
            raise DataError(f"item {i} must be a string, got {_type_name(item)}", field=field)
        if why := _emptiness(item):
            raise DataError(f"item {i} {why}", field=field)
        _text(item, field, f"item {i} ")
    return tuple(value)


def _score_list(row: Mapping[str, Any], field: str) -> tuple[float, ...]:
    value = _list(row, field, "numbers")
    out = []
    for i, item in enumerate(value):
        if isinstance(item, bool) or not isinstance(item, (int, float)):
            raise DataError(f"item {i} must be a number, got {item!r}", field=field)
        try:
            number = float(item)
        except OverflowError:  # a JSON integer with hundreds of digits
            number = math.inf
        if not math.isfinite(number):
            raise DataError(f"item {i} must be finite, got {item}", field=field)
        out.append(number)
    return tuple(out)


# ---------------------------------------------------------------------------------------
# Whole dialogues -> (prompt, chosen, rejected)


def _tails_ok(chosen: str, rejected: str, cut: int) -> bool:
    return bool(chosen[cut:].strip() and rejected[cut:].strip())


def split_shared_prefix(chosen: str, rejected: str) -> tuple[str, str, str]:
    """Split two whole dialogues that share a prefix into ``(prompt, chosen, rejected)``.

    The prompt is the common prefix up to and including its last ``"\\n\\nAssistant:"``
    (HH-RLHF; the same cut as TRL's ``extract_anthropic_prompt``). Without that marker it
    is the longest common prefix that ends on whitespace (a space or a line break),
    possibly ``""``. A cut that would leave a response empty (HH-RLHF has replies that are
    a lone space) moves left to the previous such place, so that both responses keep
    their differing text and stay non-empty. Both inputs must be non-blank.
    """
    common = os.path.commonprefix([chosen, rejected])
    markers = [m.end() for m in re.finditer(re.escape(ASSISTANT_MARKER), common)]
    spaces = [m.end() for m in _WHITESPACE.finditer(common)]
    for cut in (*reversed(markers), *reversed(spaces), 0):
        if _tails_ok(chosen, rejected, cut):
            return chosen[:cut], chosen[cut:], rejected[cut:]
    return "", chosen, rejected  # only reached with blank inputs, which callers reject


# ---------------------------------------------------------------------------------------
# Records


class _RecordBase:
    """What every record type has: its format name, its fields and ``parse``."""

    FORMAT: ClassVar[str]
    FIELDS: ClassVar[tuple[str, ...]]
    LIST_FIELDS: ClassVar[tuple[str, ...]] = ()  # JSON-encoded in CSV cells

    @classmethod
    def from_row(cls: type[R], row: Mapping[str, Any]) -> R:
        """The record of one raw row; raises :class:`DataError` naming the bad field."""
        raise NotImplementedError

    @classmethod
    def parse(cls: type[R], row: Mapping[str, Any]) -> tuple[R, list[DataError]]:
        """The record of one raw row and its warnings (valid, but carrying no signal)."""
        record = cls.from_row(row)
        return record, record.warnings()

    def warnings(self) -> list[DataError]:
        """Problems that do not make the record invalid."""
        return []


@dataclasses.dataclass(frozen=True)
class PairRecord(_RecordBase):
    """``prompt``, ``chosen`` (the preferred response), ``rejected``.

    A row with only ``chosen`` and ``rejected`` holds two whole dialogues that share a
    prefix (HH-RLHF); :func:`split_shared_prefix` turns the prefix into the prompt. The
    prompt may be a list of chat messages (TRL's conversational format), which a policy
    trained on the pairs (``objective: dpo``) renders with its chat template; reward
    learning takes text prompts only.
    """

    prompt: str | Messages
    chosen: str
    rejected: str
    FORMAT: ClassVar[str] = "pairs"
    FIELDS: ClassVar[tuple[str, ...]] = ("prompt", "chosen", "rejected")

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> "PairRecord":
        return cls.parse(row)[0]

    @classmethod
    def parse(cls, row: Mapping[str, Any]) -> tuple["PairRecord", list[DataError]]:
        warnings = []
        if "prompt" not in row and "chosen" in row and "rejected" in row:
            chosen = _string(row, "chosen", non_empty=True)
            rejected = _string(row, "rejected", non_empty=True)
            prompt, chosen_tail, rejected_tail = split_shared_prefix(chosen, rejected)
            last = os.path.commonprefix([chosen, rejected]).rfind(ASSISTANT_MARKER)
            if last >= 0 and len(prompt) < last + len(ASSISTANT_MARKER):
                blank = "chosen" if not chosen[last + len(ASSISTANT_MARKER):].strip() else "rejected"
                warnings.append(DataError(
                    "the last reply is empty, so the prompt ends at an earlier turn", field=blank))
            record = cls(prompt, chosen_tail, rejected_tail)
        else:
            value = _value(row, "prompt")
            prompt = _messages(value, "prompt") if isinstance(value, (list, tuple)) else _string(row, "prompt", non_empty=False)
            record = cls(
                prompt,
                _string(row, "chosen", non_empty=True),
                _string(row, "rejected", non_empty=True),
            )
        return record, warnings + record.warnings()

    def warnings(self) -> list[DataError]:
        if self.chosen == self.rejected:
            return [DataError("is identical to 'chosen' (no preference signal)", field="rejected")]
        return []


@dataclasses.dataclass(frozen=True)
class RankedRecord(_RecordBase):
    """``prompt``, ``responses`` (K >= 2), ``scores`` (one per response, higher is better,
    ties allowed)."""

    prompt: str
    responses: tuple[str, ...]
    scores: tuple[float, ...]
    FORMAT: ClassVar[str] = "ranked"
    FIELDS: ClassVar[tuple[str, ...]] = ("prompt", "responses", "scores")
    LIST_FIELDS: ClassVar[tuple[str, ...]] = ("responses", "scores")

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> "RankedRecord":
        prompt = _string(row, "prompt", non_empty=False)
        responses = _string_list(row, "responses")
        scores = _score_list(row, "scores")
        if len(responses) < 2:
            raise DataError(f"needs K >= 2 responses, got {len(responses)}", field="responses")
        if len(scores) != len(responses):
            raise DataError(f"has {len(scores)} scores for {len(responses)} responses", field="scores")
        first: dict[str, int] = {}
        for i, (response, score) in enumerate(zip(responses, scores)):
            j = first.setdefault(response, i)
            if scores[j] != score:
                raise DataError(f"items {j} and {i} are the same response with different scores "
                                f"({scores[j]:g} and {score:g}): contradictory", field="responses")
        return cls(prompt, responses, scores)

    def warnings(self) -> list[DataError]:
        if len(set(self.scores)) == 1:
            return [DataError(f"all {len(self.scores)} scores are tied (no preference signal)", field="scores")]
        return []


@dataclasses.dataclass(frozen=True)
class EditRecord(_RecordBase):
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
class PromptRecord(_RecordBase):
    """``prompt``: text (may be empty: unconditional generation), or a list of chat
    messages (TRL's conversational format), which the policy's chat template renders
    (:func:`tokenalign.data.prompts.render_prompts`)."""

    prompt: str | Messages
    FORMAT: ClassVar[str] = "prompts"
    FIELDS: ClassVar[tuple[str, ...]] = ("prompt",)

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> "PromptRecord":
        value = _value(row, "prompt")
        if isinstance(value, (list, tuple)):
            return cls(_messages(value, "prompt"))
        return cls(_string(row, "prompt", non_empty=False))


@dataclasses.dataclass(frozen=True)
class SupervisedRecord(_RecordBase):
    """``prompt``, ``completion``."""

    prompt: str
    completion: str
    FORMAT: ClassVar[str] = "supervised"
    FIELDS: ClassVar[tuple[str, ...]] = ("prompt", "completion")

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> "SupervisedRecord":
        return cls(_string(row, "prompt", non_empty=False), _string(row, "completion", non_empty=True))


@dataclasses.dataclass(frozen=True)
class TextRecord(_RecordBase):
    """``text``: a document, scored per segment later (pretraining with human feedback)."""

    text: str
    FORMAT: ClassVar[str] = "text"
    FIELDS: ClassVar[tuple[str, ...]] = ("text",)

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> "TextRecord":
        return cls(_string(row, "text", non_empty=True))


Record = Union[PairRecord, RankedRecord, EditRecord, PromptRecord, SupervisedRecord, TextRecord]

RECORD_TYPES: dict[str, type[_RecordBase]] = {
    cls.FORMAT: cls for cls in (PairRecord, RankedRecord, EditRecord, PromptRecord, SupervisedRecord, TextRecord)
}
"""Format name -> record class, in the order formats are listed to users."""
