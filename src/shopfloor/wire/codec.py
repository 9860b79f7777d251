"""Encode and decode a :class:`PointBatch` for the trip from edge to server.

Two encodings of wire version 1, chosen by the HTTP content type:

* ``application/json`` — columnar, so a batch of 10,000 points is a handful of arrays
  rather than 10,000 objects::

      {"version": 1, "edge": "edge-1", "seq": 42,
       "tags": ["a/b/c", "a/b/d"], "tag_index": [0, 0, 1],
       "ts": [1767225600000000000, "2026-01-01T00:00:01Z", ...],
       "value": [1.5, null, "RUNNING"], "quality": [0, 0, 2156003328],
       "text": [null, null, null]}

  ``quality``, ``text`` and ``historical`` are optional, and ``tag_index`` may be left out
  when ``tags`` has one entry. ``ts`` holds integer nanoseconds since the epoch or ISO 8601
  strings (a string without an offset is UTC). A string in ``value`` goes to the text
  column. Scripts and people may send rows instead: ``{"points": [{"tag": ..., "ts": ...,
  "value": ..., "quality": 0}]}``.

* ``application/vnd.apache.arrow.stream`` — an Arrow IPC stream in
  :data:`~shopfloor.model.points.ARROW_SCHEMA`, with ``edge``, ``seq`` and ``historical``
  (``"1"`` for a batch from the edge's backlog) in the schema metadata. The edge uplink
  uses this one: no per-point work on either side. An edge may coalesce several backlog
  batches into one stream: each record batch then carries its own ``seq`` in its custom
  metadata, and the schema metadata lists them all in ``seqs`` (comma-separated); see
  :attr:`DecodedBatch.parts`.

Either may travel compressed (``Content-Encoding: zstd`` or ``gzip``, see
:mod:`~shopfloor.wire.compression`); the size limit applies to the decompressed body too.

Every decoding fault raises :class:`~shopfloor.errors.PayloadError` whose ``field`` names
the exact place (``ts[3]``, ``points[7].value``, ``tag_index``) so the edge operator can
fix the sender. Nothing else escapes :func:`decode`, whatever the bytes.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pydantic_core

from shopfloor.errors import PayloadError
from shopfloor.model import PointBatch
from shopfloor.model.points import Float64Array, Int32Array, Int64Array, UInt32Array
from shopfloor.model.tags import validate_path
from shopfloor.wire.compression import (
    PayloadTooLarge,
    check_ipc_sizes,
    decompress,
    normalise_encoding,
)

__all__ = [
    "ARROW_MEDIA_TYPE",
    "DEFAULT_MAX_BYTES",
    "EDGE_ID_PATTERN",
    "JSON_MEDIA_TYPE",
    "WIRE_VERSION",
    "DecodedBatch",
    "PayloadTooLarge",
    "UnsupportedMediaType",
    "decode",
    "encode_arrow",
    "encode_json",
    "media_type",
]

WIRE_VERSION = 1
"""The wire version this module writes and the only one it reads."""

JSON_MEDIA_TYPE = "application/json"
ARROW_MEDIA_TYPE = "application/vnd.apache.arrow.stream"
DEFAULT_MAX_BYTES = 16 * 1024 * 1024
"""Default largest body :func:`decode` accepts (16 MiB)."""

EDGE_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$"
"""What an edge id looks like (the edge configuration's ``edge.id`` has the same rule)."""

OUTBOX_ID_PATTERN = r"^[0-9a-f]{16}$"
"""What an outbox id looks like: 16 lower-case hex digits, drawn when the outbox is made."""
_OUTBOX_ID = re.compile(OUTBOX_ID_PATTERN)

_ARROW_EXPANSION = 4
"""How much larger than the body decoded Arrow data may grow (compressed IPC buffers)."""

_TS_UTC = pa.timestamp("ns", tz="UTC")
_UINT32_MAX = 0xFFFFFFFF
_INT64_MIN = -(2**63)
_INT64_MAX = 2**63 - 1
_HAS_ZONE = r"(Z|[+-]\d\d(:?\d\d)?)$"

_COLUMNAR_KEYS = (
    "version",
    "edge",
    "outbox",
    "seq",
    "historical",
    "tags",
    "tag_index",
    "ts",
    "value",
    "quality",
    "text",
)
_ROW_KEYS = ("version", "edge", "outbox", "seq", "historical", "points")
_POINT_KEYS = ("tag", "ts", "value", "quality", "text")

FieldAt = Callable[[int], str]
"""Names the field of the i-th point, e.g. ``ts[3]`` or ``points[3].ts``."""


class UnsupportedMediaType(PayloadError):  # noqa: N818 - named after HTTP 415
    """The content type is neither JSON nor an Arrow IPC stream (HTTP 415)."""

    def __init__(self, content_type: str) -> None:
        super().__init__(
            "content-type",
            f"unsupported content type {content_type!r}; "
            f"send {JSON_MEDIA_TYPE} or {ARROW_MEDIA_TYPE}",
        )


@dataclass(frozen=True, slots=True)
class DecodedBatch:
    """A decoded batch and who sent it.

    Attributes:
        batch: the points.
        edge: the sending edge's name, if the payload carried one.
        seq: the edge's sequence number of this batch, if the payload carried one.
        outbox: the id of the edge's outbox that numbered ``seq`` (None: an outbox from
            before ids, or a sender without one).
        historical: the batch comes from the edge's backlog (older than what it already
            delivered live), so alarms must not fire again on it.
        parts: for an Arrow stream that coalesces several outbox batches, each batch's
            ``(seq, points)`` in stream order (``batch`` is then all of them and ``seq``
            the first); empty for a plain batch.
    """

    batch: PointBatch
    edge: str | None
    seq: int | None
    historical: bool = False
    parts: tuple[tuple[int, PointBatch], ...] = ()
    outbox: str | None = None


def media_type(content_type: str) -> str:
    """Return the bare, lower-case media type of a Content-Type header value."""
    return content_type.split(";", 1)[0].strip().lower()


# ----------------------------------------------------------------------------- encode
def encode_json(batch: PointBatch, *, edge: str, seq: int, historical: bool = False) -> bytes:
    """Encode ``batch`` as columnar JSON (wire version 1).

    NaN values become ``null``; infinities become ``1e999``/``-1e999``, which standard
    JSON parsers (Python, JavaScript) read back as infinity.
    """
    doc: dict[str, Any] = {
        "version": WIRE_VERSION,
        "edge": edge,
        "seq": seq,
        "historical": historical,
        "tags": list(batch.tags),
        "tag_index": batch.tag_index.tolist(),
        "ts": batch.ts.tolist(),
        "quality": batch.quality.tolist(),
    }
    if batch.text is not None:
        doc["text"] = batch.text.to_pylist()
    head = pydantic_core.to_json(doc)
    infinite = np.isinf(batch.value)
    if not infinite.any():
        value_json = pydantic_core.to_json(batch.value.tolist(), inf_nan_mode="null")
    else:  # rare: spell infinities as 1e999, a plain JSON number that parses as infinity
        value = batch.value.tolist()
        for i in np.flatnonzero(infinite).tolist():
            value[i] = _POS_INF if value[i] > 0 else _NEG_INF
        value_json = (
            pydantic_core.to_json(value, inf_nan_mode="null")
            .replace(b'"%s"' % _POS_INF.encode(), b"1e999")
            .replace(b'"%s"' % _NEG_INF.encode(), b"-1e999")
        )
    # The value column is spliced in as bytes so that infinities stay standard JSON.
    return head[:-1] + b',"value":' + value_json + b"}"


_POS_INF = "+inf"  # the value list holds only numbers and None: no string can clash
_NEG_INF = "-inf"


def encode_arrow(batch: PointBatch, *, edge: str, seq: int, historical: bool = False) -> bytes:
    """Encode ``batch`` as an Arrow IPC stream with edge, seq and historical in its metadata.

    The buffers are not compressed: compress the whole body for the trip instead
    (:func:`~shopfloor.wire.compression.compress`, ``Content-Encoding: zstd``).
    """
    metadata = {
        b"version": str(WIRE_VERSION).encode(),
        b"edge": edge.encode(),
        b"seq": b"%d" % seq,
        b"historical": b"1" if historical else b"0",
    }
    record = batch.to_arrow()
    record = record.replace_schema_metadata(metadata)
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, record.schema) as writer:
        writer.write_batch(record)
    data: bytes = sink.getvalue().to_pybytes()
    return data


# ----------------------------------------------------------------------------- decode
def decode(
    body: bytes,
    content_type: str,
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    content_encoding: str | None = None,
) -> DecodedBatch:
    """Decode a request body into a batch.

    Args:
        body: the raw bytes, as received.
        content_type: the HTTP Content-Type (parameters such as charset are ignored).
        max_bytes: the largest body accepted, compressed and decompressed alike.
        content_encoding: the HTTP Content-Encoding (zstd, gzip, identity or None).

    Raises:
        PayloadTooLarge: the body, or what it decompresses to, is over ``max_bytes``.
        UnsupportedMediaType: the content type is not one of the two encodings.
        UnsupportedEncoding: the content encoding is not zstd or gzip.
        PayloadError: the body is malformed; ``field`` names where.
    """
    kind = media_type(content_type)
    if kind not in (JSON_MEDIA_TYPE, ARROW_MEDIA_TYPE):
        raise UnsupportedMediaType(content_type)
    if len(body) > max_bytes:
        raise PayloadTooLarge(max_bytes)
    encoding = normalise_encoding(content_encoding)
    if encoding is not None:
        body = decompress(body, encoding, max_bytes=max_bytes)
    if kind == ARROW_MEDIA_TYPE:
        return _decode_arrow(body, max_decoded=max_bytes * _ARROW_EXPANSION)
    return _decode_json(body)


def _decode_json(body: bytes) -> DecodedBatch:
    try:
        doc = pydantic_core.from_json(body)  # a Rust parser: several times json.loads' speed
    except (ValueError, RecursionError) as err:
        raise PayloadError("body", f"is not valid JSON: {err}") from err
    if not isinstance(doc, dict):
        raise PayloadError("body", f"must be a JSON object, not {_kind(doc)}")
    version = doc.get("version", WIRE_VERSION)
    if version != WIRE_VERSION or isinstance(version, bool):
        raise PayloadError(
            "version", f"unsupported wire version {version!r:.20}; this server reads {WIRE_VERSION}"
        )
    edge = doc.get("edge")
    if edge is not None and not isinstance(edge, str):
        raise PayloadError("edge", f"must be a string, not {_kind(edge)}")
    seq = _seq(doc.get("seq"))
    historical = doc.get("historical", False)
    if not isinstance(historical, bool):
        raise PayloadError("historical", f"must be true or false, not {_kind(historical)}")
    if "points" in doc:
        _reject_unknown(doc, _ROW_KEYS, prefix="")
        batch = _rows(doc["points"])
    else:
        _reject_unknown(doc, _COLUMNAR_KEYS, prefix="")
        batch = _columns(doc)
    return DecodedBatch(batch, edge, seq, historical, outbox=_outbox(doc.get("outbox")))


def _outbox(outbox: object) -> str | None:
    if outbox is None:
        return None
    if not isinstance(outbox, str) or not _OUTBOX_ID.match(outbox):
        raise PayloadError("outbox", f"must be 16 lower-case hex digits, got {outbox!r:.40}")
    return outbox


def _seq(seq: object) -> int | None:
    if seq is None:
        return None
    if isinstance(seq, bool) or not isinstance(seq, int) or not 0 <= seq <= _INT64_MAX:
        raise PayloadError("seq", f"must be a non-negative integer, got {seq!r:.40}")
    return seq


def _reject_unknown(obj: dict[str, Any], allowed: Sequence[str], *, prefix: str) -> None:
    for key in obj:
        if key not in allowed:
            raise PayloadError(
                f"{prefix}{key}", f"unknown field; expected one of {', '.join(allowed)}"
            )


def _columns(doc: dict[str, Any]) -> PointBatch:
    """Decode the columnar form; each column is converted once, by Arrow, not per point."""
    for key in ("tags", "ts", "value"):
        if key not in doc:
            raise PayloadError(key, "is required")
    tags = _list(doc["tags"], "tags")
    ts_items = _list(doc["ts"], "ts")
    n = len(ts_items)
    columns: dict[str, list[Any]] = {"ts": ts_items}
    for key in ("tag_index", "value", "quality", "text"):
        if key == "value" or doc.get(key) is not None:
            columns[key] = _list(doc[key], key)
            if len(columns[key]) != n:
                raise PayloadError(key, f"has {len(columns[key])} entries but ts has {n}")
    for i, tag in enumerate(tags):
        _check_tag(tag, f"tags[{i}]")
    if len(set(tags)) != len(tags):
        seen: set[str] = set()
        for i, tag in enumerate(tags):
            if tag in seen:
                raise PayloadError(f"tags[{i}]", f"repeats {tag!r:.80}; tags must be distinct")
            seen.add(tag)
    if "tag_index" in columns:
        tag_index = _tag_index(columns["tag_index"], len(tags))
    elif len(tags) == 1 or n == 0:
        tag_index = np.zeros(n, dtype=np.int32)
    else:
        raise PayloadError("tag_index", "is required when tags has more than one entry")
    return _assemble(
        tags,
        tag_index,
        ts_items=ts_items,
        value_items=columns["value"],
        quality_items=columns.get("quality"),
        text_items=columns.get("text"),
        at=lambda col: lambda i: f"{col}[{i}]",
    )


def _rows(points: object) -> PointBatch:
    """Decode the row form: one loop to split rows into columns, then the columnar path."""
    rows = _list(points, "points")
    tag_ids: dict[str, int] = {}
    tag_index: list[int] = []
    ts: list[Any] = []
    value: list[Any] = []
    quality: list[Any] = []
    text: list[Any] = []
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise PayloadError(f"points[{i}]", f"must be an object, not {_kind(row)}")
        _reject_unknown(row, _POINT_KEYS, prefix=f"points[{i}].")
        for key in ("tag", "ts", "value"):
            if key not in row:
                raise PayloadError(f"points[{i}].{key}", "is required")
        tag = row["tag"]
        if not isinstance(tag, str) or tag not in tag_ids:
            _check_tag(tag, f"points[{i}].tag")
            tag_ids[tag] = len(tag_ids)
        tag_index.append(tag_ids[tag])
        ts.append(row["ts"])
        value.append(row["value"])
        quality.append(row.get("quality", 0))
        text.append(row.get("text"))
    has_text = any(t is not None for t in text)
    return _assemble(
        list(tag_ids),
        np.asarray(tag_index, dtype=np.int32),
        ts_items=ts,
        value_items=value,
        quality_items=quality,
        text_items=text if has_text else None,
        at=lambda col: lambda i: f"points[{i}].{col}",
    )


def _assemble(
    tags: list[str],
    tag_index: Int32Array,
    *,
    ts_items: list[Any],
    value_items: list[Any],
    quality_items: list[Any] | None,
    text_items: list[Any] | None,
    at: Callable[[str], FieldAt],
) -> PointBatch:
    n = len(ts_items)
    ts = _ts_column(ts_items, at("ts"))
    value, value_text = _value_column(value_items, at("value"))
    quality = (
        np.zeros(n, dtype=np.uint32)
        if quality_items is None
        else _quality_column(quality_items, at("quality"))
    )
    text = None if text_items is None else _text_column(text_items, at("text"))
    if text is not None and value_text is not None:
        text = pc.coalesce(text, value_text)
    elif text is None:
        text = value_text
    return PointBatch(tuple(tags), tag_index, ts, value, quality, text)


def _list(obj: object, field: str) -> list[Any]:
    if not isinstance(obj, list):
        raise PayloadError(field, f"must be an array, not {_kind(obj)}")
    return obj


def _check_tag(tag: object, field: str) -> None:
    if not isinstance(tag, str):
        raise PayloadError(field, f"must be a tag path string, not {_kind(tag)}")
    try:
        validate_path(tag)
    except ValueError as err:
        raise PayloadError(field, str(err)) from err


def _kind(obj: object) -> str:
    """Name a JSON value's type the way a sender thinks of it."""
    if obj is None:
        return "null"
    if isinstance(obj, bool):
        return "boolean"
    if isinstance(obj, int | float):
        return "number"
    if isinstance(obj, str):
        return "string"
    if isinstance(obj, list):
        return "array"
    if isinstance(obj, dict):
        return "object"
    return type(obj).__name__


def _infer(items: list[Any]) -> pa.Array | None:
    """Let Arrow convert a JSON array in C; None when the items mix types."""
    try:
        return pa.array(items)
    except (pa.ArrowException, TypeError, ValueError, OverflowError):
        return None


def _first(items: list[Any], bad: Callable[[Any], bool]) -> int:
    """Index of the first bad item (error path only)."""
    return next((i for i, x in enumerate(items) if bad(x)), 0)


def _is_int(x: object) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _tag_index(items: list[Any], n_tags: int) -> Int32Array:
    arr = _infer(items)
    if arr is not None and len(arr) == 0:
        return np.zeros(0, dtype=np.int32)
    if arr is not None and arr.type == pa.int64() and not arr.null_count:
        idx = np.asarray(arr.to_numpy(zero_copy_only=False), dtype=np.int64)
        if not ((idx < 0) | (idx >= n_tags)).any():
            return idx.astype(np.int32)
    i = _first(items, lambda x: not _is_int(x) or not 0 <= x < n_tags)
    raise PayloadError(
        f"tag_index[{i}]",
        f"must be an index into tags, an integer 0..{n_tags - 1}, got {items[i]!r:.40}",
    )


def _ts_column(items: list[Any], at: FieldAt) -> Int64Array:
    """Integer nanoseconds or ISO 8601 strings (with or without offset; none means UTC)."""
    arr = _infer(items)
    if arr is not None and not arr.null_count:
        if arr.type == pa.int64():
            return np.asarray(arr.to_numpy(zero_copy_only=False), dtype=np.int64)
        if pa.types.is_string(arr.type):
            return _parse_iso(arr, at)
        if len(arr) == 0:
            return np.zeros(0, dtype=np.int64)
    # Mixed or wrong types: classify each item (rare; only senders that mix kinds pay).
    out = np.zeros(len(items), dtype=np.int64)
    str_pos: list[int] = []
    for i, x in enumerate(items):
        if isinstance(x, str):
            str_pos.append(i)
        elif not _is_int(x):
            raise PayloadError(
                at(i),
                "must be integer nanoseconds since the epoch or an ISO 8601 string, "
                f"not {_kind(x)}",
            )
        elif not _INT64_MIN <= x <= _INT64_MAX:
            raise PayloadError(at(i), "is out of range for int64 nanoseconds")
        else:
            out[i] = x
    if str_pos:
        strs = pa.array([items[i] for i in str_pos], type=pa.string())
        out[str_pos] = _parse_iso(strs, lambda j: at(str_pos[j]))
    return out


def _parse_iso(arr: pa.Array, at: FieldAt) -> Int64Array:
    def cast(a: pa.Array) -> Int64Array:
        return np.asarray(
            a.cast(_TS_UTC).cast(pa.int64()).to_numpy(zero_copy_only=False), dtype=np.int64
        )

    try:
        return cast(arr)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        pass
    # Some strings carry no offset: they are UTC, so say so and parse again.
    has_zone = pc.match_substring_regex(arr, _HAS_ZONE)
    fixed = pc.if_else(has_zone, arr, pc.binary_join_element_wise(arr, "Z", ""))
    try:
        return cast(fixed)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        pass
    for i, text in enumerate(fixed.to_pylist()):  # error path: find the culprit
        try:
            cast(pa.array([text], type=pa.string()))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            original = arr[i].as_py()
            raise PayloadError(
                at(i), f"is not an ISO 8601 time like 2026-01-01T00:00:00Z: {original!r:.60}"
            ) from None
    raise PayloadError(at(0), "holds a time that cannot be read")  # pragma: no cover


def _value_column(items: list[Any], at: FieldAt) -> tuple[Float64Array, pa.Array | None]:
    """Numbers, booleans (0/1) and nulls (NaN) go to value; strings go to text."""
    n = len(items)
    arr = _infer(items)
    if arr is not None:
        t = arr.type
        if pa.types.is_floating(t) or pa.types.is_integer(t) or pa.types.is_boolean(t):
            return _to_float(arr), None
        if pa.types.is_null(t):
            return np.full(n, np.nan), None
        if pa.types.is_string(t):
            return np.full(n, np.nan), arr
    values = np.full(n, np.nan)
    texts: list[str | None] = [None] * n
    has_text = False
    for i, x in enumerate(items):
        if x is None:
            continue
        if isinstance(x, str):
            texts[i] = x
            has_text = True
        elif isinstance(x, bool | int | float):
            try:
                values[i] = float(x)
            except OverflowError as err:
                raise PayloadError(at(i), "is too large for a float64") from err
        else:
            raise PayloadError(at(i), f"must be a number, boolean, string or null, not {_kind(x)}")
    return values, pa.array(texts, type=pa.string()) if has_text else None


def _to_float(arr: pa.Array) -> Float64Array:
    as_float = arr.cast(pa.float64(), safe=False).fill_null(math.nan)
    return np.asarray(as_float.to_numpy(zero_copy_only=False), dtype=np.float64)


def _quality_column(items: list[Any], at: FieldAt) -> UInt32Array:
    arr = _infer(items)
    if arr is not None and not arr.null_count and arr.type == pa.int64():
        q = np.asarray(arr.to_numpy(zero_copy_only=False), dtype=np.int64)
        bad = (q < 0) | (q > _UINT32_MAX)
        if not bad.any():
            return q.astype(np.uint32)
    elif arr is not None and len(arr) == 0:
        return np.zeros(0, dtype=np.uint32)
    i = _first(items, lambda x: not _is_int(x) or not 0 <= x <= _UINT32_MAX)
    raise PayloadError(
        at(i), f"must be an OPC UA status code, an integer 0..{_UINT32_MAX}, got {items[i]!r:.40}"
    )


def _text_column(items: list[Any], at: FieldAt) -> pa.Array:
    arr = _infer(items)
    if arr is not None and (pa.types.is_string(arr.type) or pa.types.is_null(arr.type)):
        return arr.cast(pa.string())
    i = _first(items, lambda x: x is not None and not isinstance(x, str))
    raise PayloadError(at(i), f"must be a string or null, not {_kind(items[i])}")


# ----------------------------------------------------------------------------- Arrow
_ARROW_FAULTS = (pa.ArrowException, ValueError, TypeError, OSError, OverflowError, IndexError)
_COLUMN_IN_MESSAGE = re.compile(r"^column (\w+)")


def _decode_arrow(body: bytes, *, max_decoded: int) -> DecodedBatch:
    check_ipc_sizes(body, max_bytes=max_decoded)  # before Arrow allocates any of it
    try:
        reader = pa.ipc.open_stream(pa.py_buffer(body))
        records = []
        record_seqs: list[bytes | None] = []
        size = 0
        for item in reader.iter_batches_with_custom_metadata():
            record = item.batch
            # before anything reads it (even nbytes): a crafted length or offset must fail
            # here as a payload error, not crash the process in a kernel (found by fuzzing)
            record.validate(full=True)
            size += record.nbytes
            if size > max_decoded:
                raise PayloadTooLarge(max_decoded, "decoded Arrow data")
            records.append(record)
            custom = item.custom_metadata
            record_seqs.append(None if custom is None else custom.get(b"seq"))
        table = pa.Table.from_batches(records, schema=reader.schema)
        table.validate(full=True)  # crafted buffers must fail here, not crash a kernel later
    except PayloadError:
        raise
    except _ARROW_FAULTS as err:
        raise PayloadError("body", f"is not a readable Arrow IPC stream: {err}") from err
    metadata = table.schema.metadata or {}
    version = metadata.get(b"version", str(WIRE_VERSION).encode())
    if version != str(WIRE_VERSION).encode():
        raise PayloadError(
            "version", f"unsupported wire version {version!r:.20}; this server reads 1"
        )
    edge = _meta_text(metadata, b"edge")
    seq_text = _meta_text(metadata, b"seq")
    try:
        seq = None if seq_text is None else _seq(int(seq_text))
    except ValueError as err:
        raise PayloadError("seq", f"must be a non-negative integer, got {seq_text!r:.40}") from err
    historical_text = metadata.get(b"historical", b"0")
    if historical_text not in (b"0", b"1"):
        raise PayloadError("historical", f'must be "0" or "1", got {historical_text!r:.20}')
    if "tag" in table.schema.names:
        tag_type = table.schema.field("tag").type
        value_type = tag_type.value_type if pa.types.is_dictionary(tag_type) else tag_type
        if not (pa.types.is_string(value_type) or pa.types.is_large_string(value_type)):
            raise PayloadError("tag", f"must hold strings, not {tag_type}")
    batch = _arrow_batch(table)
    parts: tuple[tuple[int, PointBatch], ...] = ()
    if b"seqs" in metadata or any(s is not None for s in record_seqs):
        parts = _parts(records, record_seqs, metadata)
        if seq is not None and seq != parts[0][0]:
            raise PayloadError("seq", f"is {seq} but the first record batch says {parts[0][0]}")
        seq = parts[0][0]
    outbox = _outbox(_meta_text(metadata, b"outbox"))
    return DecodedBatch(batch, edge, seq, historical_text == b"1", parts, outbox)


def _arrow_batch(table: pa.Table) -> PointBatch:
    try:
        batch = PointBatch.from_arrow(table)
    except _ARROW_FAULTS as err:
        match = _COLUMN_IN_MESSAGE.match(str(err))
        raise PayloadError(match.group(1) if match else "body", str(err)) from err
    for tag in batch.tags:
        _check_tag(tag, "tag")
    if len(set(batch.tags)) != len(batch.tags):
        raise PayloadError("tag", "the dictionary repeats a tag path; paths must be distinct")
    return batch


def _parts(
    records: list[pa.RecordBatch], record_seqs: list[bytes | None], metadata: dict[bytes, bytes]
) -> tuple[tuple[int, PointBatch], ...]:
    """Split a coalesced stream into its outbox batches: consecutive records of one seq."""
    groups: list[tuple[int, list[pa.RecordBatch]]] = []
    for i, (record, raw) in enumerate(zip(records, record_seqs, strict=True)):
        if raw is None:
            raise PayloadError("seqs", f"record batch {i} of a coalesced stream has no seq")
        try:
            seq = _seq(int(raw))
        except ValueError as err:
            raise PayloadError("seqs", f"record batch {i} has seq {raw!r:.40}") from err
        assert seq is not None
        if groups and groups[-1][0] == seq:
            groups[-1][1].append(record)
        elif any(g[0] == seq for g in groups):
            raise PayloadError("seqs", f"seq {seq} appears twice, apart, in the stream")
        else:
            groups.append((seq, [record]))
    if not groups:
        raise PayloadError("seqs", "a coalesced stream needs at least one record batch")
    listed = _meta_text(metadata, b"seqs")
    if listed is not None and listed != ",".join(str(g[0]) for g in groups):
        raise PayloadError("seqs", f"{listed!r:.80} does not match the record batches' seqs")
    return tuple(
        (seq, _arrow_batch(pa.Table.from_batches(rs, schema=rs[0].schema))) for seq, rs in groups
    )


def _meta_text(metadata: dict[bytes, bytes], key: bytes) -> str | None:
    raw = metadata.get(key)
    if raw is None:
        return None
    try:
        return raw.decode()
    except UnicodeDecodeError as err:
        raise PayloadError(key.decode(), "is not UTF-8 text") from err
