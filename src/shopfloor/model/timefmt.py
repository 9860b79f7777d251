"""UTC nanosecond times as ISO 8601 text: one formatting for the API, messages and the UNS."""

from __future__ import annotations

from typing import Literal

import numpy as np

from shopfloor.model.points import Int64Array

__all__ = ["format_ns", "iso_strings"]


def iso_strings(ts_ns: Int64Array) -> list[str]:
    """Format UTC nanoseconds as ISO 8601 strings ending in ``Z``, in one numpy call.

    Millisecond precision when every time is a whole millisecond (what browsers parse
    best), else micro- or nanoseconds so that distinct times stay distinct.
    """
    ts = np.asarray(ts_ns, dtype=np.int64)
    if not len(ts):
        return []
    unit: Literal["ms", "us", "ns"] = "ms"
    if (ts % 1_000_000).any():
        unit = "ns" if (ts % 1000).any() else "us"
    moments = ts.view(np.dtype("datetime64[ns]")).astype(np.datetime64)
    strings: list[str] = np.datetime_as_string(moments, unit=unit, timezone="UTC").tolist()
    return strings


def format_ns(ns: int) -> str:
    """Format one UTC nanosecond time as ISO 8601 with ``Z``."""
    return iso_strings(np.array([ns], dtype=np.int64))[0]
