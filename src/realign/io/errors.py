"""What a bad record becomes: `ReadError` (input) and `WriteError` (output), each naming the
file, the line or record and the field."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from realign.io.formats import RecordError
from realign.records import Failure

Label = tuple[int | None, str | None]  # (index, id) of the record, for error messages


class ReadError(BaseModel):
    """A record that could not be read (or, as `WriteError`, written).

    `index` is None when the error concerns the file as a whole (empty, UTF-16, not a JSON
    array); then there are no records to go on with.
    """

    file: str
    line: int | None = None  # 1-based line in a text file
    index: int | None = None  # 0-based position of the record in the input
    id: str | None = None
    field: str | None = None
    message: str
    record: dict[str, Any] | None = None  # the parsed object, when there was one
    text: str | None = None  # the start of the text that could not be parsed

    def location(self) -> str:
        where = self.file
        if self.line is not None:
            where += f":{self.line}"
        elif self.index is not None:
            where += f" record {self.index}"
        if self.id is not None:
            where += f" (id {self.id})"
        return where

    def __str__(self) -> str:
        return f"{self.location()}: {self.field + ': ' if self.field else ''}{self.message}"

    def as_failure(self, stage: str) -> Failure:
        """The line this error becomes in a `<OUTPUT stem>.failures.jsonl` file."""
        return Failure(
            id=str(self.id if self.id is not None else self.index),
            index=self.index if self.index is not None else -1,
            stage=stage,
            error=str(self),
            raw_output=self.text,
            record=self.record or {},
        )


class WriteError(ReadError):
    """A record the output file cannot hold (e.g. a new key in a Parquet file)."""


class RecordWriteError(RecordError):
    """Raised by `RecordWriter.write`; carries the `WriteError` to report."""

    def __init__(self, error: WriteError) -> None:
        super().__init__(error.field, error.message)
        self.error = error
