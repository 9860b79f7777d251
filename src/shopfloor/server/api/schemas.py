"""Pydantic models of every API answer, for validation in tests and for the OpenAPI page.

Hot endpoints (series, latest values) build their JSON straight from Arrow columns and do
not pass through these models at run time; the models document the shape they promise.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from shopfloor.model.tags import DataType

__all__ = [
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
        "method_not_allowed, unavailable, internal_error.",
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
    """A batch was stored."""

    accepted: int = Field(description="Points stored.")
    edge: str | None = Field(description="The sending edge, as the payload named it.")
    seq: int | None = Field(description="The batch's sequence number, as the payload gave it.")


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
