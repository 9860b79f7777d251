"""Flat tables as JSON rows or CSV, built column by column.

Tools like Grafana's Infinity data source read a JSON array of row objects or a CSV file
without any transformation. Building one Python dict per row for that would put a Python
object per point on a read path that answers whole dashboards, so the rows are assembled
by Arrow instead: each column becomes one string array of JSON tokens, an element-wise
join glues them into one row per element, and the joined array's data buffer already *is*
the comma-separated body. Only text values (rare: string tags) are escaped one by one.
"""

from __future__ import annotations

import io
import json

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv

__all__ = ["csv_bytes", "json_rows_bytes"]

_NULL = "null"


def json_rows_bytes(table: pa.Table) -> bytes:
    """Return ``table`` as a JSON array of objects, one per row, keys in column order.

    Numbers that are null, NaN or infinite become ``null`` (JSON has none of them);
    timestamps must already be strings or integers (the caller chooses their format).
    """
    if table.num_rows == 0:
        return b"[]"
    parts: list[pa.Array | pa.Scalar] = []
    for i, name in enumerate(table.column_names):
        key = json.dumps(name, ensure_ascii=False)
        parts.append(_text(("{" if i == 0 else ",") + key + ":"))
        parts.append(_json_tokens(table.column(name).combine_chunks()))
    parts.append(_text("},"))
    rows = pc.binary_join_element_wise(*parts, _text(""))
    offsets = np.frombuffer(rows.buffers()[1], dtype=np.int64)[
        rows.offset : rows.offset + len(rows) + 1
    ]
    body = memoryview(rows.buffers()[2])[int(offsets[0]) : int(offsets[-1]) - 1]  # drop last ,
    return b"[" + bytes(body) + b"]"


def csv_bytes(table: pa.Table) -> bytes:
    """Return ``table`` as CSV with a header row; missing and non-finite numbers are empty."""
    columns = [_csv_column(table.column(name).combine_chunks()) for name in table.column_names]
    clean = pa.Table.from_arrays(columns, names=table.column_names)
    sink = io.BytesIO()
    pa_csv.write_csv(clean, sink)
    return sink.getvalue()


def _json_tokens(column: pa.Array) -> pa.LargeStringArray:
    """One JSON token per element, as a large string array without nulls."""
    kind = column.type
    if pa.types.is_dictionary(kind):
        dictionary = column.dictionary.to_pylist()
        encoded = pa.array(
            [_NULL if v is None else json.dumps(v, ensure_ascii=False) for v in dictionary],
            type=pa.large_string(),
        )
        return _fill(encoded.take(column.indices))
    if pa.types.is_floating(kind):
        text = column.cast(pa.large_string())
        return _fill(pc.if_else(pc.is_finite(column), text, _text(_NULL)))
    if pa.types.is_integer(kind) or pa.types.is_boolean(kind):
        return _fill(pc.cast(column, pa.large_string()))
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        return _fill(_json_strings(column))
    if pa.types.is_null(kind):
        return pa.array([_NULL] * len(column), type=pa.large_string())
    raise TypeError(f"no JSON encoding for Arrow type {kind}")


def _json_strings(column: pa.Array) -> pa.Array:
    """Quote strings; those that need escaping go through :func:`json.dumps`."""
    plain = pc.match_substring_regex(column, r'^[^"\\\x00-\x1f]*$')
    if pc.all(pc.fill_null(plain, True)).as_py():
        quote = _text('"')
        quoted: pa.Array = pc.binary_join_element_wise(
            quote, column.cast(pa.large_string()), quote, _text("")
        )
        return quoted
    return pa.array(
        [None if v is None else json.dumps(v, ensure_ascii=False) for v in column.to_pylist()],
        type=pa.large_string(),
    )


def _text(value: str) -> pa.Scalar:
    """A literal for the element-wise joins, of the same type as the columns."""
    return pa.scalar(value, pa.large_string())


def _fill(tokens: pa.Array) -> pa.LargeStringArray:
    filled: pa.LargeStringArray = pc.fill_null(tokens.cast(pa.large_string()), _text(_NULL))
    return filled


def _csv_column(column: pa.Array) -> pa.Array:
    if pa.types.is_dictionary(column.type):
        return column.cast(column.type.value_type)
    if pa.types.is_floating(column.type):
        return pc.if_else(pc.is_finite(column), column, pa.scalar(None, column.type))
    return column
