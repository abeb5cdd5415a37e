"""Parquet files: read by batches, written through a spool that grows one schema.

Writing spools rows to a temporary JSON Lines file while growing one schema over all records,
then writes row groups, so a key that first appears late still gets its column; a record whose
types clash with earlier ones (a string where there were numbers) is rejected with the field
named. Parquet cannot tell a missing key from a null, so nulls read back as missing keys, and a
field holding both integers and floats reads back as floats. The `realign` metadata is stored
as a JSON text column, so its free-form shape never clashes with the schema. Values JSON cannot
hold (bytes, timestamps, decimals, map entries, NaN) go through the spool packed
(`values.pack`), and a Parquet input's column types are kept in a Parquet output.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from realign.io.errors import Label, WriteError
from realign.io.formats import META_KEY
from realign.io.objects import ObjectStream, approx_size, encode, strip_nulls
from realign.values import pack, unpack

_JSON_COLUMNS_KEY = b"realign.json_columns"


def parquet_gen(path: Path) -> Callable[[ObjectStream], Iterator[tuple[int, int | None, Any]]]:
    def gen(s: ObjectStream) -> Iterator[tuple[int, int | None, Any]]:
        import pyarrow.parquet as pq

        pf = pq.ParquetFile(path)
        meta = pf.schema_arrow.metadata or {}
        json_cols = set(json.loads(meta.get(_JSON_COLUMNS_KEY, b"[]")))
        index = 0
        batches = pf.iter_batches(batch_size=64)
        while True:
            try:
                batch = next(batches, None)
            except Exception as e:  # a corrupt page: pyarrow raises several types
                yield (
                    index,
                    None,
                    s.error(f"the rest of this Parquet file is unreadable ({e})", index=index),
                )
                return
            if batch is None:
                return
            for row in batch.to_pylist():
                obj = strip_nulls(row)
                for col in json_cols & obj.keys():
                    try:
                        obj[col] = json.loads(obj[col])
                    except (TypeError, json.JSONDecodeError) as e:
                        obj = s.error(f"column holds invalid JSON: {e}", index=index, field=col)
                        break
                yield index, None, obj
                index += 1
                s.done += 1

    return gen


def _empty_object(obj: Any, path: str = "") -> str | None:
    if isinstance(obj, dict):
        if not obj and path:
            return path
        for k, v in obj.items():
            if (bad := _empty_object(v, f"{path}.{k}" if path else str(k))) is not None:
                return bad
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            if (bad := _empty_object(v, f"{path}[{i}]")) is not None:
                return bad
    return None


def _infer_schema(rows: list[dict[str, Any]], like: Any = None) -> Any:
    """The schema of all rows (`Table.from_pylist` would take the columns of the first only);
    a column the input Parquet file (`like`) has keeps its type when its values fit it."""
    import pyarrow as pa

    names = list(dict.fromkeys(k for r in rows for k in r))
    fields = []
    for k in names:
        values = [r.get(k) for r in rows]
        if like is not None and k in like.names:
            try:
                pa.array(values, type=like.field(k).type)
                fields.append(like.field(k))
                continue
            except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, OverflowError):
                pass  # the values changed type: infer the column as for any new key
        fields.append(pa.field(k, pa.array(values).type))
    return pa.schema(fields)


def _input_schema(path: str | os.PathLike[str] | None) -> Any:
    """The Arrow schema of a Parquet input (None for other inputs)."""
    if path is None or Path(path).suffix.lower() != ".parquet" or not Path(path).is_file():
        return None
    import pyarrow.parquet as pq

    try:
        return pq.read_schema(path).remove_metadata()
    except Exception:  # not readable: the output infers its types
        return None


def _spool_line(row: dict[str, Any]) -> str:
    return json.dumps(pack(row), ensure_ascii=False)


class ParquetSink:
    """Spools rows to a JSON Lines file while growing one schema, then writes row groups.

    A Parquet file has one schema, fixed when it is opened; spooling lets a key that first
    appears late still get its column, with memory bounded by one batch. A row whose types
    clash with earlier rows (a string where numbers were) is rejected with the field named.
    Integers and floats in one field become floats (Arrow has one type per column).
    """

    def __init__(
        self,
        tmp: Path,
        name: str,
        batch_rows: int,
        batch_bytes: int,
        like: str | os.PathLike[str] | None = None,
    ) -> None:
        self.like = _input_schema(like)
        self.tmp = tmp
        self.name = name
        self.batch_rows = batch_rows
        self.batch_bytes = batch_bytes
        self.spool_path = tmp.with_name(tmp.name + ".spool.jsonl")
        self.spool = self.spool_path.open("w", encoding="utf-8")
        self.rows: list[tuple[dict[str, Any], Label]] = []
        self.size = 0
        self.schema: Any = None
        self.n = 0
        self.spooled = 0

    def _reject(
        self, label: Label, field: str | None, message: str, row: dict[str, Any]
    ) -> WriteError:
        record = dict(row)
        if isinstance(record.get(META_KEY), str):  # stored as JSON text: show it as it was
            record[META_KEY] = json.loads(record[META_KEY])
        return WriteError(
            file=self.name, index=label[0], id=label[1], field=field, message=message, record=record
        )

    def add(self, obj: dict[str, Any], label: Label) -> list[WriteError]:
        row = dict(obj)
        if META_KEY in row:  # free-form metadata: a JSON text column
            row[META_KEY] = encode(row[META_KEY])
        if (bad := _empty_object(row)) is not None:
            return [self._reject(label, bad, "an empty object cannot be stored in Parquet", row)]
        _spool_line(row).encode("utf-8")  # lone surrogates fail here, like in the text sinks
        self.rows.append((row, label))
        self.size += approx_size(row)
        if len(self.rows) >= self.batch_rows or self.size >= self.batch_bytes:
            return self._absorb()
        return []

    def _unify(self, schema: Any) -> Any:
        import pyarrow as pa

        if self.schema is None:
            return schema
        return pa.unify_schemas([self.schema, schema], promote_options="permissive")

    def _absorb(self) -> list[WriteError]:
        """Merge the batch's schema into the file's and spool the rows that fit."""
        import pyarrow as pa

        clash = (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, OverflowError)
        rejects: list[WriteError] = []
        kept = [r for r, _ in self.rows]
        try:
            self.schema = self._unify(_infer_schema(kept, self.like))
        except clash:
            kept = []
            for row, label in self.rows:  # find the rows that clash, one by one
                try:
                    self.schema = self._unify(_infer_schema([row], self.like))
                    kept.append(row)
                except clash as e:
                    rejects.append(
                        self._reject(
                            label,
                            _clash_field(str(e), row),
                            f"does not fit the Parquet schema of the earlier records: {e}",
                            row,
                        )
                    )
        for row in kept:
            self.spool.write(_spool_line(row) + "\n")
        self.spooled += len(kept)
        self.rows, self.size = [], 0
        return rejects

    def close(self) -> list[WriteError]:
        import pyarrow as pa
        import pyarrow.parquet as pq

        rejects = self._absorb()
        self.spool.close()
        try:
            if self.schema is None:  # no record: an empty file with no columns
                pq.write_table(pa.table({}), self.tmp)
                return rejects
            schema = self.schema.with_metadata({_JSON_COLUMNS_KEY: json.dumps([META_KEY]).encode()})
            with (
                pq.ParquetWriter(self.tmp, schema) as writer,
                self.spool_path.open(encoding="utf-8") as f,
            ):
                batch: list[dict[str, Any]] = []
                size = 0
                for line in f:
                    batch.append(unpack(json.loads(line)))
                    size += len(line)
                    if len(batch) >= self.batch_rows or size >= self.batch_bytes:
                        writer.write_table(pa.Table.from_pylist(batch, schema=schema))
                        self.n += len(batch)
                        batch, size = [], 0
                if batch:
                    writer.write_table(pa.Table.from_pylist(batch, schema=schema))
                    self.n += len(batch)
            return rejects
        finally:
            self.spool_path.unlink(missing_ok=True)

    def abort(self) -> None:
        self.spool.close()
        self.spool_path.unlink(missing_ok=True)


def _clash_field(error: str, row: dict[str, Any]) -> str | None:
    """The column named in Arrow's merge error ('Field n has incompatible types')."""
    m = re.search(r"Field (\S+) has incompatible", error)
    if m and m.group(1) in row:
        return m.group(1)
    return next((k for k in row if k in error), None)
