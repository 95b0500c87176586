"""Load records from JSONL, JSON, CSV, Parquet, saved datasets or the Hugging Face hub.

Every problem becomes a :class:`~tokenalign.errors.DataError` that names the file, the
place (JSONL and CSV: the line of the file; JSON: the list item; Parquet and datasets: the
row, 0-based) and the field. A trailing ``.gz`` (``prefs.jsonl.gz``) is decompressed on
the fly. Text files are read as bytes and decoded line by line, so a
byte that is not UTF-8 is reported with its line and costs only the row it is in.

Policy: fail fast on the first problem (the default), or with ``skip_invalid=True`` keep
every valid record, collect every problem and log one summary with counts. A valid record
is never lost because of a bad neighbour. Blank lines (JSONL, CSV) are skipped silently.
Problems with the source as a whole (missing file, unknown file type, unparseable JSON
document, CSV header, offline hub) always raise.

Hostile input costs one row, not the load: JSON nested deeper than the parser can follow,
a key twice in one JSON object, a line longer than :data:`MAX_LINE_BYTES` (read in
bounded pieces, never whole) and a CSV quote that is never closed are each a problem of
their row. Rules on field values (lone surrogates, invisible-only responses) live in
:mod:`tokenalign.data.records`.
"""

from __future__ import annotations

import collections
import csv
import dataclasses
import gzip
import json
import logging
import re
import sys
from collections import deque
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, BinaryIO, NamedTuple

from tokenalign.data.records import RECORD_TYPES, Messages, Record
from tokenalign.errors import DataError

log = logging.getLogger(__name__)

__all__ = ["FILE_FORMATS", "MAX_LINE_BYTES", "LoadResult", "RawRow", "detect_file_format", "iter_rows", "load_records"]

FILE_FORMATS = ("jsonl", "json", "csv", "parquet", "dataset", "hub")
"""Source kinds: ``dataset`` is a ``save_to_disk`` folder, ``hub`` a dataset name."""

_EXTENSIONS = {
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "json",
    ".csv": "csv",
    ".parquet": "parquet",
    ".pq": "parquet",
}


MAX_LINE_BYTES = 64 * 2**20
"""The longest line (JSONL, CSV) read, in bytes: a longer one is a problem of its line,
found after reading this much, so a huge file without line breaks fails at once instead
of filling memory. Raise it here for data with longer lines."""


class RawRow(NamedTuple):
    """One row of a source before validation: its place and its fields, or why it is unreadable."""

    place: int
    unit: str  # "line", "item" or "row", as in DataError
    row: dict[str, Any] | DataError


@dataclasses.dataclass
class LoadResult:
    """What a load produced: the valid records, every problem and every warning."""

    source: str
    format: str
    records: list[Record]
    problems: list[DataError]
    warnings: list[DataError]
    n_read: int  # rows read, valid or not (blank lines not counted)

    @property
    def n_valid(self) -> int:
        return len(self.records)

    @property
    def n_invalid(self) -> int:
        return len(self.problems)


# ---------------------------------------------------------------------------------------
# Which kind of source


def _data_suffix(path: Path) -> str:
    """The extension that names the data format: ``.jsonl`` for ``d.jsonl`` and ``d.jsonl.gz``."""
    suffixes = [x.lower() for x in path.suffixes]
    if suffixes[-1:] == [".gz"]:
        suffixes = suffixes[:-1]
    return suffixes[-1] if suffixes else ""


def _looks_local(source: str) -> bool:
    return source.startswith(("/", "./", "../", "~", ".\\")) or _data_suffix(Path(source)) in _EXTENSIONS


def _open_bytes(path: Path) -> BinaryIO:
    """A binary file handle; ``.gz`` files are decompressed on the fly."""
    if path.suffix.lower() == ".gz":
        return gzip.open(path, "rb")  # type: ignore[return-value]
    return open(path, "rb")


def detect_file_format(source: str | Path, file_format: str | None = None) -> str:
    """The source kind (one of :data:`FILE_FORMATS`): ``file_format`` if given, else from
    the extension; an existing folder is a saved dataset, a name that is not a local path
    a hub dataset. Raises :class:`DataError` for a missing file or an unknown extension."""
    source = str(source)
    if file_format:
        if file_format not in FILE_FORMATS:
            raise DataError(f"unknown file format '{file_format}'; choose from {', '.join(FILE_FORMATS)}",
                            source=source)
        if file_format != "hub" and not Path(source).expanduser().exists():
            raise DataError("no such file or folder", source=source)
        return file_format
    path = Path(source).expanduser()
    if path.is_dir():
        return "dataset"
    if path.exists():
        kind = _EXTENSIONS.get(_data_suffix(path))
        if kind is None:
            raise DataError(
                f"cannot tell the file format from the extension '{''.join(path.suffixes[-2:])}'; "
                "name it explicitly (jsonl, json, csv, parquet)",
                source=source,
            )
        return kind
    if _looks_local(source):
        raise DataError("no such file or folder", source=source)
    return "hub"


# ---------------------------------------------------------------------------------------
# Row readers, one per kind of source


def _utf8_error(err: UnicodeError, data: bytes | str) -> str:
    if isinstance(data, bytes):  # a line of a file
        return f"is not valid UTF-8 (byte 0x{data[err.start]:02x} at column {err.start + 1})"
    # a string decoded with surrogateescape: byte b became the character U+DC00 + b
    return f"is not valid UTF-8 (byte 0x{ord(data[err.start]) - 0xDC00:02x} at character {err.start + 1})"


def _decode_lines(path: Path) -> Iterator[tuple[int, str | DataError]]:
    """Each line of a text file (1-based number, text), or a DataError for undecodable bytes
    or a line longer than :data:`MAX_LINE_BYTES` (the rest of which is skipped in pieces of
    that size: memory stays bounded). A UTF-8 byte order mark at the start is dropped."""
    cap = MAX_LINE_BYTES
    with _open_bytes(path) as fh:
        number = 0
        while raw := fh.readline(cap + 1):
            number += 1
            if len(raw) > cap and not raw.endswith(b"\n"):
                yield number, DataError(f"is longer than {cap} bytes (the limit, "
                                        "tokenalign.data.loading.MAX_LINE_BYTES; a file without line breaks?)")
                while raw and not raw.endswith(b"\n"):
                    raw = fh.readline(cap)
                continue
            if number == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]
            try:
                yield number, raw.decode("utf-8")
            except UnicodeDecodeError as err:
                yield number, DataError(_utf8_error(err, raw))


def _json_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object; a key twice is an error: parsers disagree on which value wins, so the
    row means different things to different tools."""
    out = dict(pairs)
    if len(out) == len(pairs):
        return out
    seen: set[str] = set()
    for key, _ in pairs:
        if key in seen:
            raise DataError(f"the key '{key}' appears twice in one JSON object (ambiguous: which value is meant?)")
        seen.add(key)
    return out  # pragma: no cover - a shorter dict means a repeated key


def _parse_json(text: str) -> Any:
    """``json.loads`` with duplicate keys and too deep nesting as DataError."""
    try:
        return json.loads(text, object_pairs_hook=_json_object)
    except RecursionError:
        raise DataError(f"JSON nested too deeply (the parser follows fewer than {sys.getrecursionlimit()} "
                        "levels)") from None


def _jsonl_rows(path: Path) -> Iterator[RawRow]:
    for number, text in _decode_lines(path):
        if isinstance(text, DataError):
            yield RawRow(number, "line", text)
            continue
        text = text.rstrip("\r\n")  # errors at the end of a line then stay on that line
        if not text.strip():
            continue
        try:
            row = _parse_json(text)
        except json.JSONDecodeError as err:
            yield RawRow(number, "line", DataError(f"malformed JSON ({err.msg} at column {err.colno})"))
            continue
        except DataError as err:
            yield RawRow(number, "line", err)
            continue
        if not isinstance(row, dict):
            yield RawRow(number, "line", DataError(f"must be a JSON object, got {type(row).__name__}"))
            continue
        yield RawRow(number, "line", row)


def _bad_utf8_field(row: Mapping[str, Any]) -> DataError | None:
    """A field whose text held bytes that are not UTF-8 (decoded with surrogateescape)."""
    for field, value in row.items():
        for text in value if isinstance(value, list) else [value]:
            if isinstance(text, str):
                try:
                    text.encode("utf-8")
                except UnicodeEncodeError as err:
                    return DataError(_utf8_error(err, text), field=str(field))
    return None


def _json_rows(path: Path) -> Iterator[RawRow]:
    # Bytes that are not UTF-8 must not lose the whole list: decode them as surrogates
    # and report the item that holds them.
    with _open_bytes(path) as fh:
        data = fh.read()
    text = data.decode("utf-8", errors="surrogateescape").removeprefix("\ufeff")
    items: Iterable[Any | DataError]
    try:
        data = _parse_json(text)
    except json.JSONDecodeError as err:
        raise DataError(f"malformed JSON ({err.msg} at column {err.colno})", source=str(path),
                        line=err.lineno) from None
    except DataError:  # one item nested too deeply or with a key twice: parse item by item
        spans = _json_item_spans(text)
        if spans is None:
            raise DataError('a JSON file must hold a list of objects, or {"data": [...]}', source=str(path)) from None
        items = (_parse_item(text[start:end]) for start, end in spans)
    else:
        if isinstance(data, dict) and isinstance(data.get("data"), list):
            data = data["data"]
        if not isinstance(data, list):
            raise DataError('a JSON file must hold a list of objects, or {"data": [...]}', source=str(path))
        items = data
    for index, row in enumerate(items):
        if isinstance(row, DataError):
            yield RawRow(index, "item", row)
        elif not isinstance(row, dict):
            yield RawRow(index, "item", DataError(f"must be a JSON object, got {type(row).__name__}"))
        else:
            yield RawRow(index, "item", _bad_utf8_field(row) or row)


_JSON_TOKEN = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{},]')  # a string, a bracket or a comma
_OPENS_LIST = re.compile(r"\s*:\s*\[")


def _json_item_spans(text: str) -> list[tuple[int, int]] | None:
    """Where each item of a JSON document's list of records lies (the top-level list, or
    the list under the top-level key ``"data"``), found by matching brackets outside
    strings; None when the document has neither. Only for documents that the parser
    cannot read whole."""
    start = len(text) - len(text.lstrip())
    tokens = _JSON_TOKEN.finditer(text, start)
    if text.startswith("{", start):
        depth = 0
        for tok in tokens:
            t = tok.group()
            if t in "[{":
                depth += 1
            elif t in "]}":
                depth -= 1
            elif depth == 1 and t == '"data"' and (m := _OPENS_LIST.match(text, tok.end())):
                start = m.end() - 1
                tokens = _JSON_TOKEN.finditer(text, start)
                break
        else:
            return None
    if not text.startswith("[", start):
        return None
    next(tokens)  # the list's own bracket
    spans, depth, begin = [], 0, start + 1
    for tok in tokens:
        t = tok.group()
        if t in "[{":
            depth += 1
        elif t in "]}" and depth > 0:
            depth -= 1
        elif depth == 0 and t in ",]":
            spans.append((begin, tok.start()))
            begin = tok.end()
            if t == "]":
                break
    else:
        spans.append((begin, len(text)))  # a list that never closes: its last item runs to the end
    return [(a, b) for a, b in spans if text[a:b].strip() or len(spans) > 1]


def _parse_item(text: str) -> Any | DataError:
    """One item of a JSON list, or why it cannot be read."""
    try:
        return _parse_json(text)
    except json.JSONDecodeError as err:
        return DataError(f"malformed JSON ({err.msg} at column {err.colno} of the item)")
    except DataError as err:
        return err


def _csv_rows(path: Path) -> Iterator[RawRow]:
    """Rows of a CSV file with a header, each placed at the line of the file it starts on.
    Every cell is a string; list fields are decoded later (after ``field_map``).

    A bad quote (never closed, or a stray one inside a quoted cell) swallows the lines
    after it into one cell: that row is reported at its first line, and the lines it
    swallowed are read again as rows."""
    lines = _decode_lines(path)
    bad_lines: dict[int, DataError] = {}
    pending: deque[tuple[int, str]] = deque()  # lines to read again after an unclosed quote
    taken: list[tuple[int, str]] = []  # the lines of the row being read

    def text_lines() -> Iterator[str]:
        while True:
            if pending:
                number, text = pending.popleft()
            else:
                item = next(lines, None)
                if item is None:
                    return
                number, text = item
                if isinstance(text, DataError):
                    bad_lines[number] = text
                    text = ""  # keeps the line count; the row it belongs to is reported below
            taken.append((number, text))
            yield text

    csv.field_size_limit(max(csv.field_size_limit(), 2**31 - 1))  # long responses exceed the 128 KiB default
    reader = csv.reader(text_lines())
    try:
        header = next(reader)
    except StopIteration:
        raise DataError("is empty (a CSV file needs a header row)", source=str(path)) from None
    except csv.Error as err:
        raise DataError(f"malformed CSV header ({err})", source=str(path), line=1) from None
    if 1 in bad_lines:
        raise bad_lines[1].located(str(path), 1)
    duplicates = sorted({name for name in header if header.count(name) > 1})
    if duplicates:
        raise DataError(f"the CSV header repeats the column(s) {', '.join(duplicates)}", source=str(path), line=1)
    while True:
        taken.clear()
        try:
            cells = next(reader)
        except StopIteration:
            return
        except csv.Error as err:
            why = "a line break inside an unquoted cell" if "new-line character" in str(err) else str(err)
            yield RawRow(taken[0][0] if taken else 0, "line", DataError(f"malformed CSV ({why})"))
            continue
        start, end = taken[0][0], taken[-1][0]
        why = _quote_problem([text for _, text in taken])
        if why:
            yield RawRow(start, "line", DataError(why))
            pending.extend(taken[1:])  # the swallowed lines: read them again as rows
            reader = csv.reader(text_lines())
            continue
        bad = [n for n, _ in taken if n in bad_lines]
        if bad:
            yield RawRow(bad[0], "line", bad_lines[bad[0]])
            continue
        if not cells:  # a blank line
            continue
        if len(cells) != len(header):
            hint = f" (the row spans lines {start}-{end}: a quote not closed?)" if end > start else ""
            yield RawRow(start, "line", DataError(f"has {len(cells)} cells for {len(header)} columns{hint}"))
            continue
        yield RawRow(start, "line", dict(zip(header, cells)))


def _quote_problem(texts: list[str]) -> str | None:
    """Why the lines of one CSV row are not one well-quoted row, or None. The reader is
    lenient: it takes the end of the file as the end of an open quote, and a stray quote
    inside a quoted cell as text, so one bad quote can swallow the rows after it. Checked
    only where that can happen: a row over several lines, or the file's last line."""
    if len(texts) == 1 and texts[0].endswith("\n") or not any('"' in t for t in texts):
        return None
    try:
        for _ in csv.reader(texts, strict=True):
            pass
    except csv.Error as err:
        if "unexpected end of data" in str(err):
            return "a quote opened on this line is never closed (it ran to the end of the file)"
        return f"malformed CSV ({err}; a quote inside a quoted cell is written twice: \"\")"
    return None


def _table_rows(rows: Iterable[Mapping[str, Any]]) -> Iterator[RawRow]:
    for index, row in enumerate(rows):
        yield RawRow(index, "row", dict(row))


def _parquet_rows(path: Path) -> Iterator[RawRow]:
    import pyarrow.parquet as pq

    try:
        with _open_bytes(path) as fh:
            table = pq.read_table(fh)
    except Exception as err:  # pyarrow raises several types for files it cannot read
        raise DataError(f"cannot read as Parquet ({type(err).__name__}: {err})", source=str(path)) from None
    return _table_rows(table.to_pylist())


def _dataset_rows(source: str, kind: str, split: str) -> Iterator[RawRow]:
    import datasets

    try:
        if kind == "dataset":
            ds = datasets.load_from_disk(str(Path(source).expanduser()))
        else:
            ds = datasets.load_dataset(source, split=split)
    except Exception as err:  # offline hub, unknown name, corrupt folder: many error types
        if kind == "dataset":
            why = "cannot load the dataset folder (written by save_to_disk?)"
        else:
            why = ("is not a local file or folder, and loading it as a Hugging Face hub dataset failed "
                   "(offline, or no such dataset)")
        raise DataError(f"{why}: {type(err).__name__}: {err}", source=source) from None
    if isinstance(ds, datasets.DatasetDict):
        if split not in ds:
            raise DataError(f"has no split '{split}' (it has {', '.join(ds)})", source=source)
        ds = ds[split]
    return _table_rows(ds)


def iter_rows(source: str | Path, file_format: str | None = None, split: str = "train") -> Iterator[RawRow]:
    """The raw rows of a source with their place; an unreadable row comes as a DataError.

    Raises :class:`DataError` when the source as a whole cannot be read.
    """
    source = str(source)
    kind = detect_file_format(source, file_format)
    path = Path(source).expanduser()
    if kind == "jsonl":
        return _jsonl_rows(path)
    if kind == "json":
        return _json_rows(path)
    if kind == "csv":
        return _csv_rows(path)
    if kind == "parquet":
        return _parquet_rows(path)
    return _dataset_rows(source, kind, split)


# ---------------------------------------------------------------------------------------
# Rows -> records


def _check_field_map(field_map: Mapping[str, str], fmt: str, source: str) -> None:
    fields = RECORD_TYPES[fmt].FIELDS
    for ours, theirs in field_map.items():
        if ours not in fields:
            raise DataError(f"field_map names '{ours}', which is not a field of '{fmt}' ({', '.join(fields)})",
                            source=source)
        if not isinstance(theirs, str) or not theirs:
            raise DataError(f"field_map: the column for '{ours}' must be a non-empty string", source=source)


def _rename(row: Mapping[str, Any], field_map: Mapping[str, str]) -> dict[str, Any]:
    """Our field names from the source's column names; a mapped column must exist."""
    out = dict(row)
    for ours, theirs in field_map.items():
        if theirs not in row:
            raise DataError(f"missing (no column '{theirs}', named in field_map)", field=ours)
        out.pop(ours, None)
    for ours, theirs in field_map.items():
        out[ours] = row[theirs]
    return out


def _decode_list_cells(row: dict[str, Any], list_fields: tuple[str, ...]) -> dict[str, Any]:
    """CSV cells of list fields hold JSON, e.g. ``["a", "b"]`` and ``[1, 0.5]``."""
    for field in list_fields:
        cell = row.get(field)
        if isinstance(cell, str):
            try:
                row[field] = _parse_json(cell)
            except DataError as err:
                raise DataError(f"{err.message}, in a CSV cell", field=field) from None
            except json.JSONDecodeError:
                raise DataError(f"must be a JSON-encoded list in a CSV cell, got {cell!r}", field=field) from None
    return row


def _summarise(problems: list[DataError]) -> str:
    counts = collections.Counter(f"field '{p.field}'" if p.field else p.message.split(" (")[0] for p in problems)
    return ", ".join(f"{n} x {what}" for what, n in counts.most_common())


def _guarded(rows: Iterator[RawRow], source: str) -> Iterator[RawRow]:
    """The rows, with read failures part-way (I/O errors, truncated .gz files) as DataError."""
    try:
        yield from rows
    except (OSError, EOFError) as err:
        raise DataError(f"cannot read: {err}", source=source) from None


def _memory_rows(source: Any) -> tuple[str, Iterator[RawRow]]:
    """A name and the rows of an in-memory source: a ``datasets.Dataset`` (or a
    ``DatasetDict``, by split) or a sequence of mappings."""
    try:
        import datasets
    except ImportError:  # datasets is optional for in-memory lists
        datasets = None
    if datasets is not None and isinstance(source, datasets.DatasetDict):
        raise DataError(f"is a DatasetDict with splits {', '.join(source)}: pass one split, e.g. ds['train']",
                        source="<DatasetDict>")
    if datasets is not None and isinstance(source, datasets.Dataset):
        return "<datasets.Dataset>", _table_rows(source)
    if isinstance(source, Sequence) and not isinstance(source, (str, bytes)):
        def rows() -> Iterator[RawRow]:
            for index, row in enumerate(source):
                if isinstance(row, Mapping):
                    yield RawRow(index, "item", dict(row))
                else:
                    yield RawRow(index, "item", DataError(f"must be an object with fields, got {type(row).__name__}"))
        return "<list>", rows()
    raise DataError(f"cannot read a {type(source).__name__} as data: pass a path, a dataset name, a datasets.Dataset "
                    "or a list of dicts", source=f"<{type(source).__name__}>")


def load_records(
    source: str | Path | Sequence[Mapping[str, Any]] | Any,
    fmt: str,
    *,
    skip_invalid: bool = False,
    field_map: Mapping[str, str] | None = None,
    split: str = "train",
    file_format: str | None = None,
    log_summary: bool = True,
) -> LoadResult:
    """Load and validate every row of ``source`` as records of format ``fmt``.

    ``source`` is a path, a dataset name, or in memory: a ``datasets.Dataset`` or a list
    of dicts. ``fmt`` is one of ``pairs ranked edits prompts supervised text``; ``field_map`` maps
    our field names to the source's column names (``{"prompt": "question"}``); ``split``
    picks a split of a dataset; ``file_format`` overrides the guess from the extension.
    Raises the first :class:`DataError` unless ``skip_invalid``; then the result holds all
    valid records and all problems, and one summary is logged (unless ``log_summary`` is
    false). A source without any row is an error either way.
    """
    name = str(source) if isinstance(source, (str, Path)) else f"<{type(source).__name__}>"
    if fmt not in RECORD_TYPES:
        raise DataError(f"unknown data format '{fmt}'; choose from {', '.join(RECORD_TYPES)}", source=name)
    if isinstance(source, (str, Path)):
        src = str(source)
        kind = detect_file_format(src, file_format)
        rows = _guarded(iter_rows(src, kind, split), src)
    else:
        src, rows = _memory_rows(source)
        kind = "memory"
    cls = RECORD_TYPES[fmt]
    field_map = dict(field_map or {})
    _check_field_map(field_map, fmt, src)
    records: list[Record] = []
    problems: list[DataError] = []
    warnings: list[DataError] = []
    n_read = 0
    for place, unit, row in rows:
        n_read += 1
        try:
            if isinstance(row, DataError):
                raise row
            row = _rename(row, field_map)
            if kind == "csv":
                row = _decode_list_cells(row, cls.LIST_FIELDS)
            record, record_warnings = cls.parse(row)
        except DataError as err:
            located = err.located(src, place, unit)
            if not skip_invalid:
                raise located from None
            problems.append(located)
            continue
        records.append(record)
        warnings.extend(w.located(src, place, unit) for w in record_warnings)
    if n_read == 0:
        raise DataError("holds no records", source=src)
    if log_summary and problems:
        log.warning("%s: skipped %d invalid of %d records (%s); first: %s",
                    src, len(problems), n_read, _summarise(problems), problems[0])
    if log_summary and warnings:
        log.warning("%s: %d of %d records with warnings (%s); first: %s",
                    src, len(warnings), n_read, _summarise(warnings), warnings[0])
    return LoadResult(src, fmt, records, problems, warnings, n_read)


def load_prompts(source: Any, split: str = "train") -> list[str | Messages]:
    """The ``prompt`` field of every row of ``source``: any source :func:`load_records`
    reads (JSONL, JSON, CSV, Parquet, a saved or named dataset, a ``datasets.Dataset``, a
    list of dicts), or a list of strings. Each prompt is text or a conversation (a tuple
    of :class:`Message`, rendered by :func:`tokenalign.data.prompts.render_prompts`).
    Rows are validated as ``prompts`` records; a source without one is an error."""
    if isinstance(source, Sequence) and not isinstance(source, (str, bytes)) and source and all(
            isinstance(p, str) for p in source):
        source = [{"prompt": p} for p in source]
    return [r.prompt for r in load_records(source, "prompts", split=split).records]
