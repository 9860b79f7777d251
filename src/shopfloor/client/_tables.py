"""Answers of the REST API as Arrow tables and small value types; optional dataframes.

pandas and polars are not dependencies of shopfloor: :func:`to_pandas` and
:func:`to_polars` import them when called and say what to install when they are missing.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pyarrow as pa

__all__ = [
    "LATEST_SCHEMA",
    "Tag",
    "bucket_text",
    "latest_table",
    "tag_from_json",
    "time_text",
    "to_pandas",
    "to_polars",
]

LATEST_SCHEMA = pa.schema(
    [
        pa.field("path", pa.string(), nullable=False),
        pa.field("ts", pa.timestamp("ns", tz="UTC"), nullable=False),
        pa.field("value", pa.float64()),
        pa.field("quality", pa.uint32(), nullable=False),
        pa.field("text", pa.string()),
    ]
)
"""Columns of :meth:`ShopfloorClient.latest`."""


@dataclass(frozen=True, slots=True)
class Tag:
    """A tag and its metadata, as the server knows it.

    Attributes:
        path: ISA-95 path, e.g. ``acme/plant-1/machining/line-1/cnc-1/spindle_temp``.
        name: the last segment of the path.
        asset: the path of the asset the tag belongs to.
        unit: engineering unit (``degC``), or "".
        description: free text.
        data_type: ``float``, ``int``, ``bool``, ``string`` … as the server reports it.
        eng_low: low end of the engineering range, if set.
        eng_high: high end of the engineering range, if set.
        states: labels of enumerated values, by integer value.
    """

    path: str
    name: str
    asset: str
    unit: str
    description: str
    data_type: str
    eng_low: float | None
    eng_high: float | None
    states: Mapping[int, str]


def tag_from_json(row: Mapping[str, Any]) -> Tag:
    """One entry of ``GET /api/v1/tags``."""
    return Tag(
        path=row["path"],
        name=row["name"],
        asset=row["asset"],
        unit=row["unit"],
        description=row["description"],
        data_type=str(row["data_type"]),
        eng_low=row.get("eng_low"),
        eng_high=row.get("eng_high"),
        states={int(k): v for k, v in (row.get("states") or {}).items()},
    )


def latest_table(rows: Sequence[Mapping[str, Any]]) -> pa.Table:
    """``GET /api/v1/values/latest`` rows as a table in :data:`LATEST_SCHEMA`."""
    # numpy reads ISO 8601 with up to nine fraction digits; the API writes UTC with "Z"
    stamps = np.array([r["ts"].removesuffix("Z") for r in rows], dtype="datetime64[ns]")
    return pa.Table.from_arrays(
        [
            pa.array([r["path"] for r in rows], type=pa.string()),
            pa.array(stamps.view(np.int64), type=pa.int64()).view(pa.timestamp("ns", "UTC")),
            pa.array([r["value"] for r in rows], type=pa.float64()),
            pa.array([r["quality"] for r in rows], type=pa.uint32()),
            pa.array([r["text"] for r in rows], type=pa.string()),
        ],
        schema=LATEST_SCHEMA,
    )


def time_text(moment: datetime | str | int) -> str:
    """A time as the API reads it.

    ``datetime`` must carry a time zone (a naive one is ambiguous); ``str`` goes as written
    (ISO 8601, ``now``, ``-1h``, ``now-15m``); ``int`` is UTC nanoseconds since the epoch.

    Raises:
        ValueError: a naive datetime.
    """
    if isinstance(moment, str):
        return moment
    if isinstance(moment, datetime):
        if moment.tzinfo is None or moment.utcoffset() is None:
            raise ValueError(f"{moment!r} has no time zone; use e.g. datetime.now(UTC)")
        return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")
    ns = np.array([int(moment)], dtype=np.int64).view("datetime64[ns]")
    text: str = np.datetime_as_string(ns, unit="ns", timezone="UTC")[0]
    return text


def bucket_text(bucket: str | timedelta) -> str:
    """A bucket width as the API reads it (``30s``, ``1m``; a timedelta in whole ms).

    Raises:
        ValueError: a timedelta that is not a positive whole number of milliseconds.
    """
    if isinstance(bucket, str):
        return bucket
    micros = bucket // timedelta(microseconds=1)
    if micros <= 0 or micros % 1000:
        raise ValueError(f"bucket {bucket} must be a positive whole number of milliseconds")
    return f"{micros // 1000}ms"


def to_pandas(table: pa.Table) -> Any:
    """Return ``table`` as a pandas DataFrame (needs ``pip install pandas``)."""
    _optional("pandas", "to_pandas")
    return table.to_pandas()


def to_polars(table: pa.Table) -> Any:
    """Return ``table`` as a polars DataFrame (needs ``pip install polars``)."""
    return _optional("polars", "to_polars").from_arrow(table)


def _optional(module: str, caller: str) -> Any:
    """Import an optional dataframe library, or say how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise ImportError(
            f"{caller} needs {module}, which shopfloor does not install: pip install {module}"
        ) from err
