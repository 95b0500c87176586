"""Load records from JSONL, JSON, CSV, Parquet, saved datasets or the Hugging Face hub.

Every problem becomes a :class:`~tokenalign.errors.DataError` that names the file, the
line (JSONL, CSV), item (JSON list) or row (Parquet, datasets), and the field.
Policy: fail fast on the first problem (default), or with ``skip_invalid=True`` keep every
valid record and return all problems — a valid record is never lost because of a bad
neighbour. Blank lines in JSONL are skipped.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import logging
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from tokenalign.data.records import RECORD_TYPES
from tokenalign.errors import DataError

log = logging.getLogger(__name__)

__all__ = ["LoadResult", "load_records", "iter_rows", "FILE_FORMATS"]

FILE_FORMATS = ("jsonl", "json", "csv", "parquet", "dataset")
_EXTENSIONS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json", ".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}
_LIST_FIELDS = ("responses", "scores")


@dataclasses.dataclass
class LoadResult:
    """What a load produced: the valid records and every problem found."""

    source: str
    format: str
    records: list[Any]
    problems: list[DataError]
    warnings: list[DataError]
    n_read: int

    @property
    def n_invalid(self) -> int:
        return len(self.problems)


# A row source yields (place, unit, row-or-error).
Row = tuple[int | None, str, Mapping[str, Any] | DataError]


def _detect(source: str, file_format: str | None) -> str:
    if file_format:
        if file_format not in FILE_FORMATS:
            raise DataError(f"unknown file format '{file_format}'; choose from {', '.join(FILE_FORMATS)}", source=source)
        return file_format
    path = Path(source)
    if path.is_dir():
        return "dataset"
    suffixes = [x.lower() for x in path.suffixes]
    if suffixes[-1:] == [".gz"]:
        suffixes = suffixes[:-1]  # data.jsonl.gz is read through gzip
    if suffixes and suffixes[-1] in _EXTENSIONS:
        return _EXTENSIONS[suffixes[-1]]
    if path.exists():
        raise DataError(f"cannot tell the file format from '{path.suffix}'; pass it explicitly (jsonl, json, csv, parquet)", source=source)
    return "hub"


def _decode_error(err: UnicodeDecodeError) -> str:
    return f"is not valid UTF-8 (byte 0x{err.object[err.start]:02x} at column {err.start + 1})"


def _open_bytes(path: Path):
    """Binary file handle; ``.gz`` files are decompressed on the fly."""
    if path.suffix.lower() == ".gz":
        import gzip

        return gzip.open(path, "rb")
    return open(path, "rb")


def _jsonl_rows(path: Path) -> Iterator[Row]:
    with _open_bytes(path) as fh:
        for n, raw in enumerate(fh, start=1):
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                yield n, "line", DataError(_decode_error(err))
                continue
            if not text.strip():
                continue
            try:
                row = json.loads(text)
            except json.JSONDecodeError as err:
                yield n, "line", DataError(f"malformed JSON ({err.msg} at column {err.colno})")
                continue
            if not isinstance(row, dict):
                yield n, "line", DataError(f"must be a JSON object, got {type(row).__name__}")
                continue
            yield n, "line", row


def _read_text(path: Path) -> str:
    with _open_bytes(path) as fh:
        data = fh.read()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        col = err.start - (data.rfind(b"\n", 0, err.start) + 1)
        raise DataError(f"is not valid UTF-8 (byte 0x{data[err.start]:02x} at column {col + 1})", source=str(path), line=line) from None


def _json_rows(path: Path) -> Iterator[Row]:
    try:
        data = json.loads(_read_text(path))
    except json.JSONDecodeError as err:
        raise DataError(f"malformed JSON ({err.msg} at column {err.colno})", source=str(path), line=err.lineno) from None
    if isinstance(data, dict) and isinstance(data.get("data"), list):
        data = data["data"]
    if not isinstance(data, list):
        raise DataError('a JSON file must hold a list of objects or {"data": [...]}', source=str(path))
    for i, row in enumerate(data):
        if not isinstance(row, dict):
            yield i, "item", DataError(f"must be a JSON object, got {type(row).__name__}")
        else:
            yield i, "item", row


def _csv_rows(path: Path) -> Iterator[Row]:
    reader = csv.DictReader(io.StringIO(_read_text(path), newline=""))
    for row in reader:
        line = reader.line_num
        if None in row:
            yield line, "line", DataError(f"has {len(reader.fieldnames or []) + len(row[None])} cells for {len(reader.fieldnames or [])} columns")
            continue
        parsed: dict[str, Any] = dict(row)
        bad = None
        for field in _LIST_FIELDS:
            cell = parsed.get(field)
            if isinstance(cell, str):
                try:
                    parsed[field] = json.loads(cell)
                except json.JSONDecodeError:
                    bad = DataError("must be a JSON-encoded list in a CSV cell", field=field)
                    break
        yield line, "line", bad if bad is not None else parsed


def _table_rows(rows: Any) -> Iterator[Row]:
    for i, row in enumerate(rows):
        yield i, "row", dict(row)


def iter_rows(source: str | Path, file_format: str | None = None, split: str = "train") -> Iterator[Row]:
    """Raw rows of a source with their place; unreadable rows come as DataError."""
    source = str(source)
    kind = _detect(source, file_format)
    path = Path(source)
    if kind != "hub" and not path.exists():
        raise DataError("no such file or folder", source=source)
    if kind == "jsonl":
        return _jsonl_rows(path)
    if kind == "json":
        return _json_rows(path)
    if kind == "csv":
        return _csv_rows(path)
    if kind == "parquet":
        import pyarrow.parquet as pq

        try:
            return _table_rows(pq.read_table(path).to_pylist())
        except Exception as err:  # pyarrow raises several types for corrupt files
            raise DataError(f"cannot read Parquet ({err})", source=source) from None
    import datasets

    try:
        if kind == "dataset":
            ds = datasets.load_from_disk(source)
        else:
            ds = datasets.load_dataset(source, split=split)
    except Exception as err:  # offline hub, missing dataset, corrupt folder
        raise DataError(f"cannot load dataset ({type(err).__name__}: {err})", source=source) from None
    if isinstance(ds, datasets.DatasetDict):
        if split not in ds:
            raise DataError(f"has no split '{split}' (has {', '.join(ds)})", source=source)
        ds = ds[split]
    return _table_rows(ds)


def _apply_field_map(row: Mapping[str, Any], field_map: Mapping[str, str] | None) -> Mapping[str, Any]:
    if not field_map:
        return row
    out = dict(row)
    for ours, theirs in field_map.items():
        if theirs in row:
            out[ours] = row[theirs]
    return out


def load_records(
    source: str | Path,
    fmt: str,
    *,
    skip_invalid: bool = False,
    field_map: Mapping[str, str] | None = None,
    split: str = "train",
    file_format: str | None = None,
    log_summary: bool = True,
) -> LoadResult:
    """Load and validate every row of ``source`` as records of format ``fmt``.

    Raises the first :class:`DataError` unless ``skip_invalid``; then the result holds all
    valid records and all problems (and a warning summary is logged).
    """
    if fmt not in RECORD_TYPES:
        raise DataError(f"unknown data format '{fmt}'; choose from {', '.join(RECORD_TYPES)}", source=str(source))
    cls = RECORD_TYPES[fmt]
    src = str(source)
    records, problems, warnings, n_read = [], [], [], 0
    for place, unit, row in iter_rows(src, file_format, split):
        n_read += 1
        err = row if isinstance(row, DataError) else None
        if err is None:
            try:
                record = cls.from_row(_apply_field_map(row, field_map))
            except DataError as e:
                err = e
        if err is not None:
            located = err.located(src, place, unit)
            if not skip_invalid:
                raise located
            problems.append(located)
            continue
        records.append(record)
        for w in getattr(record, "warnings", lambda: [])():
            warnings.append(w.located(src, place, unit))
    if problems and log_summary:
        log.warning("%s: skipped %d invalid of %d records (first: %s)", src, len(problems), n_read, problems[0])
    if warnings and log_summary:
        log.warning("%s: %d records with warnings (first: %s)", src, len(warnings), warnings[0])
    return LoadResult(src, fmt, records, problems, warnings, n_read)
