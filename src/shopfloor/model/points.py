"""Columnar batches of points, the one type that moves on every hot path.

A :class:`PointBatch` holds columns, not objects: per point an index into the batch's own
tuple of tag paths (Arrow dictionary encoding), an int64 UTC timestamp in nanoseconds, a
float64 value and an OPC UA status code. Text values travel in an optional Arrow string
column; booleans travel as 0.0/1.0 with the tag's data type saying how to show them.

Converting to and from Arrow shares the numeric buffers instead of copying them.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa

Int32Array = npt.NDArray[np.int32]
Int64Array = npt.NDArray[np.int64]
Float64Array = npt.NDArray[np.float64]
UInt32Array = npt.NDArray[np.uint32]


class Quality(IntEnum):
    """OPC UA status codes used by shopfloor (Part 4, 7.39; Part 6, Annex A).

    The two top bits are the severity: 00 Good, 01 Uncertain, 10 Bad. Any other OPC UA
    code is valid in a batch too; these are the ones shopfloor itself produces.
    """

    GOOD = 0x00000000
    UNCERTAIN = 0x40000000
    UNCERTAIN_LAST_USABLE_VALUE = 0x40900000
    BAD = 0x80000000
    BAD_RESOURCE_UNAVAILABLE = 0x80040000
    BAD_COMMUNICATION_ERROR = 0x80050000
    BAD_DECODING_ERROR = 0x80070000
    BAD_NO_COMMUNICATION = 0x80310000
    BAD_WAITING_FOR_INITIAL_DATA = 0x80320000
    BAD_NOT_READABLE = 0x803A0000
    BAD_OUT_OF_RANGE = 0x803C0000
    BAD_NOT_SUPPORTED = 0x803D0000
    BAD_NOT_FOUND = 0x803E0000
    BAD_CONFIGURATION_ERROR = 0x80890000
    BAD_NOT_CONNECTED = 0x808A0000
    BAD_DEVICE_FAILURE = 0x808B0000
    BAD_SENSOR_FAILURE = 0x808C0000
    BAD_OUT_OF_SERVICE = 0x808D0000


_SEVERITY_MASK = np.uint32(0xC0000000)


def is_good(quality: UInt32Array) -> npt.NDArray[np.bool_]:
    """Return a mask of the points whose severity is Good."""
    mask: npt.NDArray[np.bool_] = (quality & _SEVERITY_MASK) == 0
    return mask


def is_bad(quality: UInt32Array) -> npt.NDArray[np.bool_]:
    """Return a mask of the points whose severity is Bad."""
    mask: npt.NDArray[np.bool_] = (quality & np.uint32(0x80000000)) != 0
    return mask


def now_ns() -> int:
    """Return the current UTC wall-clock time in integer nanoseconds."""
    return time.time_ns()


ARROW_SCHEMA = pa.schema(
    [
        pa.field("tag", pa.dictionary(pa.int32(), pa.string()), nullable=False),
        pa.field("ts", pa.timestamp("ns", tz="UTC"), nullable=False),
        pa.field("value", pa.float64(), nullable=False),
        pa.field("quality", pa.uint32(), nullable=False),
        pa.field("text", pa.string(), nullable=True),
    ]
)
"""The Arrow form of a batch, used on the wire and by the historian."""


@dataclass(frozen=True, slots=True, eq=False)
class PointBatch:
    """Points as columns.

    Attributes:
        tags: the distinct tag paths this batch speaks of (its dictionary).
        tag_index: per point, an index into ``tags`` (int32).
        ts: per point, UTC time in nanoseconds since the epoch (int64).
        value: per point, the numeric value (float64; NaN for text or missing values).
        quality: per point, an OPC UA status code (uint32).
        text: per point, the text value of string tags, or None when no point has one.
    """

    tags: tuple[str, ...]
    tag_index: Int32Array
    ts: Int64Array
    value: Float64Array
    quality: UInt32Array
    text: pa.StringArray | None = None

    def __post_init__(self) -> None:
        n = len(self.ts)
        for name in ("tag_index", "value", "quality"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"column {name} has {len(getattr(self, name))} rows, ts has {n}")
        if self.text is not None and len(self.text) != n:
            raise ValueError(f"column text has {len(self.text)} rows, ts has {n}")
        if n and (int(self.tag_index.min()) < 0 or int(self.tag_index.max()) >= len(self.tags)):
            raise ValueError("tag_index points outside tags")

    # ----------------------------------------------------------------- building
    @classmethod
    def from_columns(
        cls,
        tags: Sequence[str],
        tag_index: npt.ArrayLike,
        ts: npt.ArrayLike,
        value: npt.ArrayLike,
        quality: npt.ArrayLike | None = None,
        *,
        text: pa.StringArray | Sequence[str | None] | None = None,
    ) -> PointBatch:
        """Build a batch from array-likes, converting dtypes once (no copy if they match)."""
        ts_arr = np.ascontiguousarray(ts, dtype=np.int64)
        q = (
            np.zeros(len(ts_arr), dtype=np.uint32)
            if quality is None
            else np.ascontiguousarray(quality, dtype=np.uint32)
        )
        text_arr = None if text is None else _as_string_array(text)
        return cls(
            tags=tuple(tags),
            tag_index=np.ascontiguousarray(tag_index, dtype=np.int32),
            ts=ts_arr,
            value=np.ascontiguousarray(value, dtype=np.float64),
            quality=q,
            text=text_arr,
        )

    @classmethod
    def from_points(cls, points: Iterable[tuple[str, int, Any, int]]) -> PointBatch:
        """Build a batch from ``(path, ts_ns, value, quality)`` rows.

        Meant for connectors that receive one value at a time and for tests; hot paths
        build columns directly. A ``str`` value goes to the text column (value NaN), a
        ``bool`` becomes 0.0/1.0, ``None`` becomes NaN.
        """
        tags: dict[str, int] = {}
        idx: list[int] = []
        ts: list[int] = []
        values: list[float] = []
        quality: list[int] = []
        texts: list[str | None] = []
        has_text = False
        for path, t, v, q in points:
            idx.append(tags.setdefault(path, len(tags)))
            ts.append(int(t))
            quality.append(int(q))
            if isinstance(v, str):
                values.append(float("nan"))
                texts.append(v)
                has_text = True
            else:
                values.append(float("nan") if v is None else float(v))
                texts.append(None)
        return cls.from_columns(
            list(tags), idx, ts, values, quality, text=texts if has_text else None
        )

    @classmethod
    def empty(cls) -> PointBatch:
        """Return a batch with no points."""
        return cls.from_columns([], [], [], [], [])

    @classmethod
    def concat(cls, batches: Sequence[PointBatch]) -> PointBatch:
        """Join batches into one, merging their tag dictionaries."""
        batches = [b for b in batches if len(b)]
        if not batches:
            return cls.empty()
        if len(batches) == 1:
            return batches[0]
        merged: dict[str, int] = {}
        remapped: list[Int32Array] = []
        for b in batches:
            lookup = np.fromiter(
                (merged.setdefault(t, len(merged)) for t in b.tags),
                dtype=np.int32,
                count=len(b.tags),
            )
            remapped.append(lookup[b.tag_index])
        text = None
        if any(b.text is not None for b in batches):
            parts = [
                b.text if b.text is not None else pa.nulls(len(b), pa.string()) for b in batches
            ]
            text = pa.concat_arrays(parts)
        return cls(
            tags=tuple(merged),
            tag_index=np.concatenate(remapped),
            ts=np.concatenate([b.ts for b in batches]),
            value=np.concatenate([b.value for b in batches]),
            quality=np.concatenate([b.quality for b in batches]),
            text=text,
        )

    # ---------------------------------------------------------------- reading
    def __len__(self) -> int:
        return len(self.ts)

    def paths(self) -> npt.NDArray[np.object_]:
        """Return the tag path of every point (an object array; for tests and small batches)."""
        return np.asarray(self.tags, dtype=object)[self.tag_index]

    def select(self, mask: npt.NDArray[np.bool_]) -> PointBatch:
        """Return the points where ``mask`` is true, keeping the tag dictionary."""
        text = None
        if self.text is not None:
            text = self.text.filter(pa.array(mask))
        return PointBatch(
            tags=self.tags,
            tag_index=self.tag_index[mask],
            ts=self.ts[mask],
            value=self.value[mask],
            quality=self.quality[mask],
            text=text,
        )

    # ------------------------------------------------------------------ Arrow
    def to_arrow(self) -> pa.RecordBatch:
        """Return the batch as an Arrow record batch in :data:`ARROW_SCHEMA`.

        The numeric columns share memory with the numpy arrays.
        """
        n = len(self)
        tag = pa.DictionaryArray.from_arrays(
            pa.array(self.tag_index, type=pa.int32()), pa.array(self.tags, type=pa.string())
        )
        text = self.text if self.text is not None else pa.nulls(n, pa.string())
        return pa.RecordBatch.from_arrays(
            [
                tag,
                pa.array(self.ts, type=pa.int64()).view(pa.timestamp("ns", tz="UTC")),
                pa.array(self.value, type=pa.float64()),
                pa.array(self.quality, type=pa.uint32()),
                text,
            ],
            schema=ARROW_SCHEMA,
        )

    @classmethod
    def from_arrow(cls, data: pa.RecordBatch | pa.Table) -> PointBatch:
        """Build a batch from Arrow data in :data:`ARROW_SCHEMA` (``text`` may be absent).

        The tag column may be dictionary-encoded (kept as is) or plain strings (encoded
        once). Numeric columns are shared, not copied, when they have no nulls.

        Raises:
            ValueError: a column is missing, has nulls or has the wrong type; the message
                names the column.
        """
        if isinstance(data, pa.Table):
            data = data.combine_chunks().to_batches()[0] if data.num_rows else None
            if data is None:
                return cls.empty()
        names = set(data.schema.names)
        for col in ("tag", "ts", "value", "quality"):
            if col not in names:
                raise ValueError(f"column {col} is missing")
            if data.column(col).null_count:
                raise ValueError(f"column {col} has nulls")
        tag = data.column("tag")
        if not pa.types.is_dictionary(tag.type):
            if not (pa.types.is_string(tag.type) or pa.types.is_large_string(tag.type)):
                raise ValueError(f"column tag must be strings, not {tag.type}")
            tag = tag.dictionary_encode()
        ts = data.column("ts")
        if pa.types.is_timestamp(ts.type):
            if ts.type.unit != "ns":
                ts = ts.cast(pa.timestamp("ns", tz=ts.type.tz))
            ts = ts.view(pa.int64())
        elif not pa.types.is_integer(ts.type):
            raise ValueError(f"column ts must be a timestamp or int64 nanoseconds, not {ts.type}")
        text = None
        if "text" in names and data.column("text").null_count < data.num_rows:
            text = data.column("text").cast(pa.string())
        try:
            value = data.column("value").cast(pa.float64())
            quality = data.column("quality").cast(pa.uint32())
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as err:
            raise ValueError(f"column value or quality has the wrong type: {err}") from err
        return cls(
            tags=tuple(tag.dictionary.to_pylist()),
            tag_index=tag.indices.cast(pa.int32()).to_numpy(zero_copy_only=False),
            ts=np.asarray(ts.cast(pa.int64()).to_numpy(zero_copy_only=False), dtype=np.int64),
            value=value.to_numpy(zero_copy_only=False),
            quality=quality.to_numpy(zero_copy_only=False),
            text=text,
        )


def _as_string_array(text: pa.StringArray | Sequence[str | None]) -> pa.StringArray:
    if isinstance(text, pa.Array):
        return text.cast(pa.string())
    return pa.array(list(text), type=pa.string())


@dataclass(frozen=True, slots=True)
class LiveBatch:
    """A batch as the live channel carries it.

    Attributes:
        batch: the points, as stored (future points already flagged Uncertain).
        historical: the batch comes from an edge's backlog; its values are older than
            what the edge already delivered live. An alarm engine must not raise alarms
            on it again; dashboards only take points newer than what they show.
        edge: the sending edge, if known.
    """

    batch: PointBatch
    historical: bool = False
    edge: str | None = None
