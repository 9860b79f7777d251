"""Pydantic models of every API answer, for validation in tests and for the OpenAPI page.

Hot endpoints (series, latest values) build their JSON straight from Arrow columns and do
not pass through these models at run time; the models document the shape they promise.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from shopfloor.model.tags import DataType

__all__ = [
    "BufferStatus",
    "ConnectorStatus",
    "EdgeOut",
    "EdgeStatusIn",
    "EdgeStatusOut",
    "EdgesOut",
    "ErrorBody",
    "ErrorEnvelope",
    "HealthOut",
    "IngestOut",
    "LatestOut",
    "LatestValue",
    "SeriesOut",
    "TagIn",
    "TagOut",
    "TagsIn",
    "TagsOut",
    "TagsRegistered",
    "WsError",
    "WsSnapshot",
    "WsValues",
]


class ErrorBody(BaseModel):
    """What went wrong, and where."""

    code: str = Field(
        description="Machine-readable kind: invalid_parameter, invalid_payload, "
        "malformed_body, not_found, payload_too_large, unsupported_media_type, "
        "method_not_allowed, too_many_requests, unavailable, internal_error.",
        examples=["invalid_parameter"],
    )
    field: str | None = Field(
        description="The parameter or payload field at fault (e.g. bucket, ts[3]), if any.",
        examples=["bucket"],
    )
    message: str = Field(
        description="A sentence for people.",
        examples=["bucket must look like 30s, 1m, 1h or 1d, got '5x'"],
    )


class ErrorEnvelope(BaseModel):
    """Every 4xx and 5xx answer has this shape."""

    error: ErrorBody


class TagOut(BaseModel):
    """A tag and its metadata."""

    path: str = Field(
        description="ISA-95 path, e.g. acme/plant-1/machining/line-1/cnc-1/spindle_temp"
    )
    name: str = Field(description="The last segment of the path.")
    asset: str = Field(description="The path of the asset the tag belongs to.")
    unit: str = Field(description="Engineering unit, e.g. degC.")
    description: str
    data_type: DataType
    eng_low: float | None = Field(description="Low end of the engineering range.")
    eng_high: float | None = Field(description="High end of the engineering range.")
    states: dict[str, str] = Field(
        description="Labels of enumerated values, keyed by the integer value as a string.",
        examples=[{"1": "RUNNING", "2": "IDLE"}],
    )


class TagIn(BaseModel):
    """Metadata of a tag, as an edge announces it before sending its values."""

    model_config = ConfigDict(extra="forbid")

    path: str = Field(max_length=512, description="ISA-95 path of the tag.")
    unit: str = Field("", max_length=64, description="Engineering unit.")
    description: str = Field("", max_length=2000)
    data_type: DataType = DataType.FLOAT
    eng_low: float | None = None
    eng_high: float | None = None
    states: dict[str, str] = Field(
        default_factory=dict, description="Labels of enumerated values by integer value."
    )


class TagsIn(BaseModel):
    """Tags to create or update (keyed by path)."""

    model_config = ConfigDict(extra="forbid")

    tags: list[TagIn] = Field(max_length=100_000)


class TagsRegistered(BaseModel):
    """How many tags were created or updated."""

    registered: int


class TagsOut(BaseModel):
    """Tags sorted by path."""

    tags: list[TagOut]


class SeriesOut(BaseModel):
    """One tag's history over ``[start, end)``, as columns.

    Raw points have the columns ts, value, quality and text. Bucketed answers have ts
    (the bucket start) and one column per requested aggregate. Times are ISO 8601 UTC
    strings ending in Z; missing or non-finite numbers are null.
    """

    path: str
    start: str = Field(description="Start of the range, ISO 8601 UTC.")
    end: str = Field(description="End of the range (exclusive), ISO 8601 UTC.")
    bucket: str | None = Field(description="The bucket width asked for, or null for raw.")
    truncated: bool = Field(
        description="True when more rows matched than `limit`; ask again from the last ts."
    )
    columns: dict[str, list[str | float | int | None]] = Field(
        examples=[{"ts": ["2026-01-01T00:00:00.000Z"], "value": [21.5], "quality": [0]}]
    )


class LatestValue(BaseModel):
    """The last value of a tag."""

    path: str
    ts: str = Field(description="ISO 8601 UTC.")
    value: float | None = Field(description="Numeric value; null for text or missing values.")
    quality: int = Field(description="OPC UA status code; 0 is Good.")
    text: str | None = Field(description="Text value of string tags.")


class LatestOut(BaseModel):
    """The last value of each tag."""

    values: list[LatestValue]


class IngestOut(BaseModel):
    """A batch was stored (for a batch with edge and seq: committed)."""

    accepted: int = Field(description="Points stored by this request (0 for a duplicate).")
    edge: str | None = Field(description="The sending edge, as the payload named it.")
    seq: int | None = Field(description="The batch's sequence number, as the payload gave it.")
    duplicate: bool = Field(
        False,
        description="The batch's (edge, seq) was committed before; nothing was stored now. "
        "Either way the edge may delete the batch.",
    )


class BufferStatus(BaseModel):
    """An edge's outbox. Fields beyond these are kept as sent."""

    model_config = ConfigDict(extra="allow")

    batches: int | None = Field(None, ge=0, description="Batches waiting to be sent.")
    points: int | None = Field(None, ge=0, description="Points waiting to be sent.")
    bytes: int | None = Field(None, ge=0, description="Bytes the outbox holds.")
    oldest_age_s: float | None = Field(None, ge=0, description="Age of the oldest batch.")
    hours_left: float | None = Field(
        None, ge=0, description="Hours until the outbox is full at the current rate."
    )
    dropped_points: int | None = Field(None, ge=0, description="Points dropped when full.")
    quarantined_batches: int | None = Field(
        None, ge=0, description="Batches the platform refused for good."
    )
    policy: str | None = Field(None, max_length=32, description="drop-oldest or stop-reading.")
    full: bool | None = Field(None, description="The outbox is full now.")


class UplinkStatus(BaseModel):
    """An edge's link to the platform. Fields beyond these are kept as sent."""

    model_config = ConfigDict(extra="allow")

    send_rate_pps: float | None = Field(None, ge=0, description="Points sent per second.")
    ack_latency_ms_p50: float | None = Field(
        None, ge=0, description="Median time from sending a batch to its acknowledgement."
    )
    reconnects: int | None = Field(None, ge=0, description="Reconnections since start.")


class ConnectorStatus(BaseModel):
    """One connector row, as ``/api/v1/connectors`` shows it; other fields are kept."""

    model_config = ConfigDict(extra="allow")

    name: str = Field(max_length=200)
    kind: str | None = Field(None, max_length=64)
    state: str | None = Field(None, max_length=64)


class EdgeStatusIn(BaseModel):
    """What an edge reports about itself every few seconds (docs/wire.md)."""

    model_config = ConfigDict(extra="forbid")

    edge_time_ns: int = Field(
        ge=0, description="The edge's wall clock when it sent this (UTC ns since the epoch)."
    )
    buffer: BufferStatus = Field(description="The outbox.")
    uplink: UplinkStatus = Field(description="The link to the platform.")
    connectors: list[ConnectorStatus] = Field(
        default_factory=list, max_length=10_000, description="Connector health."
    )


class EdgeStatusOut(BaseModel):
    """The platform's answer to a status report."""

    skew_s: float = Field(
        description="Estimated platform clock minus edge clock, in seconds (positive: the "
        "edge's clock is behind)."
    )


class EdgeOut(BaseModel):
    """One edge as the platform knows it."""

    edge: str
    last_seen: str | None = Field(description="When the platform last heard from it.")
    status_at: str | None = Field(description="When its last status report arrived.")
    status: dict[str, Any] | None = Field(description="Its last status report, as sent.")
    skew_s: float | None = Field(description="Platform clock minus edge clock, seconds.")
    batches: int = Field(description="Batches committed since the platform started.")
    points: int = Field(description="Points committed since the platform started.")
    duplicates: int = Field(description="Batches received again and not stored again.")
    last_seq: int | None = Field(description="The highest batch sequence number applied.")
    low_water: int | None = Field(
        description="Every sequence number up to this one is applied (or given up)."
    )
    gaps: int = Field(description="Runs of sequence numbers not received yet (backlog).")
    future_points: int = Field(
        description="Points stored Uncertain because their time was too far ahead."
    )


class EdgesOut(BaseModel):
    """Every edge the platform has heard from or holds batches of, sorted by id."""

    edges: list[EdgeOut]
    evicted: int = Field(description="Edges whose status was forgotten to bound memory.")


class HealthOut(BaseModel):
    """Liveness and counters. Further keys come from the server's status callback."""

    model_config = ConfigDict(extra="allow")

    status: str = Field(examples=["ok"])
    version: str
    historian: dict[str, float | int]
    ingest: dict[str, int]
    live: dict[str, int]
    websocket: dict[str, int]


class WsSnapshot(BaseModel):
    """Sent on connect and after each subscribe: the latest value of every matching tag."""

    type: str = "snapshot"
    values: list[LatestValue]


class WsValues(BaseModel):
    """Pushed at most every 250 ms: the newest value of each tag that changed."""

    type: str = "values"
    values: list[LatestValue]


class WsError(BaseModel):
    """Answer to a message the server could not understand; the connection stays open."""

    type: str = "error"
    error: ErrorBody


class HistoryRow(BaseModel):
    """One row of ``GET /api/v1/history`` in its long shape (JSON; CSV has the same columns).

    Raw points have ``value``, ``quality`` and ``text``; bucketed answers have one column
    per aggregate instead (``avg``, ``min``, ``max``, ``first``, ``last``, ``count``). The
    wide shape has ``time`` and one column per tag path instead of ``path``.
    """

    model_config = ConfigDict(extra="allow")

    time: str | int = Field(
        description="ISO 8601 UTC (`time_format=iso`) or epoch milliseconds (`ms`); for "
        "buckets, the bucket start.",
        examples=["2026-01-01T08:00:00.000Z"],
    )
    path: str = Field(description="The tag's path.")
    value: float | None = Field(
        None, description="Raw: the numeric value; null for text and non-finite values."
    )
    quality: int | None = Field(None, description="Raw: OPC UA status code; 0 is Good.")
    text: str | None = Field(None, description="Raw: the value of a text tag.")


__all__ += ["HistoryRow"]


class ValueAtRow(BaseModel):
    """One row of ``GET /api/v1/values/at`` in its long shape (JSON; CSV has the same columns).

    The wide shape has ``time`` and one column per tag path instead of ``path``/``value``.
    """

    model_config = ConfigDict(extra="allow")

    time: str | int = Field(
        description="The time asked for: ISO 8601 UTC (`time_format=iso`) or epoch "
        "milliseconds (`ms`).",
        examples=["2026-03-02T05:00:00.000Z"],
    )
    path: str = Field(description="The tag's path.")
    value: float | None = Field(
        description="The tag's value then, from its Good points; null before the first one "
        "(and, for `linear`, after the last one)."
    )


__all__ += ["ValueAtRow"]


class WideRow(BaseModel):
    """One row of the wide shape (``shape=wide``) of ``GET /api/v1/history`` and
    ``GET /api/v1/values/at``: ``time`` and one column per tag path (``path:agg`` with
    several aggregates, ``path:bad`` for the count of non-Good points), null where a tag
    has no value at that time."""

    model_config = ConfigDict(
        extra="allow",
        json_schema_extra={"additionalProperties": {"type": ["number", "string", "null"]}},
    )

    time: str | int = Field(
        description="ISO 8601 UTC (`time_format=iso`) or epoch milliseconds (`ms`).",
        examples=["2026-01-01T08:00:00.000Z"],
    )


__all__ += ["WideRow"]


class StorageGroupOut(BaseModel):
    """One area, equipment or tag in ``GET /api/v1/storage``: the sum of its tags."""

    key: str = Field(
        description="The group: the tag's path, its equipment (the path without the tag's "
        "name) or its area (the first three segments of the equipment).",
        examples=["acme/plant-1/utilities"],
    )
    tags: int = Field(description="Tags in the group.")
    points: int = Field(description="Raw points stored (exact).")
    bytes: int = Field(description="Bytes the raw points take (see `method`).")
    rollup_rows: int = Field(description="Rows of rollup tables of the group's tags.")
    rollup_bytes: int = Field(description="Bytes those rollup rows take.")
    oldest: str | None = Field(description="The oldest raw point (ISO 8601 UTC).")
    newest: str | None = Field(description="The newest raw point (ISO 8601 UTC).")


class StorageTableOut(BaseModel):
    """One table of the history."""

    name: str
    kind: str = Field(description="`raw`, `rollup_1m`, `rollup_1h` or `other`.")
    rows: int = Field(description="Rows (hour blocks for PostgreSQL's raw tables).")
    points: int = Field(description="Raw points (0 for other kinds).")
    bytes: int = Field(description="Its size on disk.")
    used_bytes: int = Field(
        description="What its rows and indexes hold; the rest is free space new rows reuse."
    )


class StorageTotalsOut(BaseModel):
    """The history as a whole."""

    storage_bytes: int = Field(
        description="On disk: the DuckDB file and its WAL, or the PostgreSQL schema's tables."
    )
    used_bytes: int = Field(description="What the disk budget counts (used blocks, live rows).")
    database_bytes: int = Field(description="The whole database file or PostgreSQL database.")
    free_disk_bytes: int | None = Field(
        description="Free space of the disk holding the DuckDB file (null for PostgreSQL)."
    )
    wal_bytes: int | None = Field(description="DuckDB's write-ahead log (null for PostgreSQL).")
    budget_bytes: int | None = Field(description="The disk budget (null: none).")
    points: int = Field(description="Raw points.")
    rollup_rows: int = Field(description="Rows of every rollup table.")


class StorageOut(BaseModel):
    """Answer of ``GET /api/v1/storage``: what uses the disk, per group, largest first."""

    backend: str = Field(examples=["duckdb", "postgres/blocks"])
    method: str = Field(description="How bytes are attributed to tags, in a sentence.")
    group: str = Field(description="`area`, `equipment` or `tag`.")
    prefix: str | None = Field(description="Only tags at or under this asset path.")
    measured: str = Field(description="When it was measured (ISO 8601 UTC).")
    groups: list[StorageGroupOut] = Field(description="Largest (raw plus rollup bytes) first.")
    groups_total: int = Field(description="Groups before `top` cut the list.")
    tables: list[StorageTableOut]
    totals: StorageTotalsOut
    retention: dict[str, Any] = Field(
        description="The retention settings as written and the counters since start "
        "(passes, deleted_points, budget_evictions, over_budget, last_pass)."
    )


__all__ += ["StorageGroupOut", "StorageOut", "StorageTableOut", "StorageTotalsOut"]
