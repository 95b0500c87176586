"""User-facing errors.

Every error a user can cause (a bad file, a bad config value, a missing model) is a
:class:`TokenalignError`. The CLI prints it as one line and exits with status 2, so a
traceback always means a bug in tokenalign, never in the user's input.
"""

from __future__ import annotations


class TokenalignError(Exception):
    """Base class of errors caused by the user's input, printed without a traceback."""


class ConfigError(TokenalignError):
    """A config file or ``--set`` override is invalid (unknown key, wrong type, bad value)."""


class DataError(TokenalignError):
    """A data record is invalid. Names the file, the line (or row) and the field.

    ``str(err)`` reads like ``data.jsonl:12: field 'chosen': must be a non-empty string``.
    """

    def __init__(
        self,
        message: str,
        *,
        source: str | None = None,
        line: int | None = None,
        field: str | None = None,
        unit: str = "line",
    ) -> None:
        self.message = message
        self.source = source
        self.line = line
        self.field = field
        self.unit = unit  # "line" (text files), "row" (CSV data rows, Parquet, datasets), "item" (JSON lists)
        super().__init__(self.format())

    def located(self, source: str, line: int | None, unit: str = "line") -> "DataError":
        """The same error with its place filled in (the loader knows it, the record doesn't)."""
        return DataError(self.message, source=source, line=line, field=self.field, unit=unit)

    def format(self) -> str:
        where = self.source or "<data>"
        if self.line is not None:
            where += f":{self.line}" if self.unit == "line" else f": {self.unit} {self.line}"
        what = f"field '{self.field}': " if self.field else ""
        return f"{where}: {what}{self.message}"
