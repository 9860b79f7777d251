"""Arrow tables to API answers, column by column, without one pydantic object per point."""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pydantic_core
from starlette.requests import Request
from starlette.responses import Response

from shopfloor.errors import PayloadError
from shopfloor.model.tags import validate_path
from shopfloor.server.api.timeparse import iso_strings
from shopfloor.wire import ARROW_MEDIA_TYPE

__all__ = [
    "arrow_response",
    "column_list",
    "json_bytes",
    "json_response",
    "latest_rows",
    "normalise_prefix",
    "path_under",
    "ts_strings",
    "wants_arrow",
]


def json_bytes(content: Any) -> bytes:
    """Serialise to JSON in Rust; NaN and infinities become null (JSON has neither)."""
    return pydantic_core.to_json(content, inf_nan_mode="null")


def json_response(content: Any, *, status_code: int = 200) -> Response:
    """Return ``content`` as a JSON response, serialised in one pass."""
    return Response(json_bytes(content), status_code=status_code, media_type="application/json")


def wants_arrow(request: Request) -> bool:
    """True when the client asked for an Arrow IPC stream in its Accept header."""
    return ARROW_MEDIA_TYPE in request.headers.get("accept", "")


def arrow_response(table: pa.Table, *, metadata: dict[str, str]) -> Response:
    """Return ``table`` as an Arrow IPC stream, with ``metadata`` on its schema."""
    table = table.replace_schema_metadata({k.encode(): v.encode() for k, v in metadata.items()})
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return Response(sink.getvalue().to_pybytes(), media_type=ARROW_MEDIA_TYPE)


def ts_strings(column: pa.ChunkedArray | pa.Array) -> list[str]:
    """ISO 8601 strings of a timestamp column."""
    ns = column.cast(pa.int64()).to_numpy(zero_copy_only=False)
    return iso_strings(np.asarray(ns, dtype=np.int64))


def column_list(column: pa.ChunkedArray | pa.Array) -> list[Any]:
    """A column as a Python list: numbers through numpy (fast), the rest through Arrow."""
    kind = column.type
    if (pa.types.is_floating(kind) or pa.types.is_integer(kind)) and not column.null_count:
        values: list[Any] = column.to_numpy(zero_copy_only=False).tolist()
        return values
    if pa.types.is_floating(kind):  # nulls become NaN, which JSON answers show as null
        values = column.to_numpy(zero_copy_only=False).tolist()
        return values
    listed: list[Any] = column.to_pylist()
    return listed


def normalise_prefix(prefix: str | None, *, field: str = "prefix") -> str | None:
    """Return a well-formed path prefix without a trailing slash, or None for "everything".

    Raises:
        PayloadError: the prefix is not a well-formed path.
    """
    if prefix is None:
        return None
    prefix = prefix.strip().rstrip("/")
    if not prefix:
        return None
    try:
        return validate_path(prefix)
    except ValueError as err:
        raise PayloadError(field, f"{field} is not a path prefix: {err}") from err


def path_under(path: str, prefix: str | None) -> bool:
    """True when ``path`` is ``prefix`` or lies below it (whole segments only)."""
    return prefix is None or path == prefix or path.startswith(prefix + "/")


def latest_rows(table: pa.Table, prefix: str | None, *, sort: bool = True) -> list[dict[str, Any]]:
    """Rows ``{path, ts, value, quality, text}`` of a latest-values table.

    Args:
        table: what :meth:`Historian.latest` returned.
        prefix: only paths at or under this one; None for all.
        sort: sort by path (else keep the table's order).
    """
    if prefix is not None:
        paths = table.column("path")
        keep = pc.or_(pc.equal(paths, prefix), pc.starts_with(paths, prefix + "/"))
        table = table.filter(keep)
    if sort:
        table = table.sort_by("path")
    if not table.num_rows:
        return []
    text = table.column("text") if "text" in table.column_names else None
    return [
        {"path": p, "ts": t, "value": v, "quality": q, "text": x}
        for p, t, v, q, x in zip(
            table.column("path").to_pylist(),
            ts_strings(table.column("ts")),
            column_list(table.column("value")),
            column_list(table.column("quality")),
            [None] * table.num_rows if text is None else text.to_pylist(),
            strict=True,
        )
    ]
