"""What the history routes share: bucket, aggregate and time-zone parameters, and errors.

``/api/v1/history``, ``/api/v1/tags/{path}/series`` and ``/api/v1/values/at`` hand their
parameters to the historian's many-tag reads (``read_buckets``, ``read_at``). The
historian names its own arguments in a :class:`~shopfloor.errors.PayloadError`
(``bucket``, ``end``, ``times``…); :func:`renamed_fields` renames them to the query
parameters the client actually sent, so every error answer points at something the
client can change.

Bucket text (``interval=`` and ``bucket=``): a whole number and a unit. ``ms``, ``s``,
``m`` and ``h`` are fixed widths; ``d``, ``w`` (ISO weeks, from Monday), ``mo`` (or
Grafana's ``M``) and ``y`` are calendar buckets from local midnight in the query's time
zone, so ``1d`` lasts 23 or 25 hours across a DST change and ``3mo`` are quarters.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from shopfloor.errors import PayloadError
from shopfloor.server.historian.base import Aggregate, BucketSize, Calendar, CalendarUnit

__all__ = [
    "BAD_COLUMN",
    "MAX_BUCKETS",
    "MAX_WIDTH_NS",
    "bucket_count",
    "non_empty_rows",
    "parse_aggregates",
    "parse_bucket",
    "parse_tz",
    "renamed_fields",
]

MAX_BUCKETS = 100_000
"""The most fixed-width buckets one query may ask for per tag."""
BAD_COLUMN = "bad"
"""The column of ``read_buckets`` counting the points of a bucket that are not Good."""

_DAY_NS = 86_400_000_000_000
_FIXED_NS = {"ms": 1_000_000, "s": 1_000_000_000, "m": 60_000_000_000, "h": 3_600_000_000_000}
_CALENDAR = {
    "d": (CalendarUnit.DAY, 1),
    "w": (CalendarUnit.WEEK, 1),
    "mo": (CalendarUnit.MONTH, 1),
    "M": (CalendarUnit.MONTH, 1),
    "y": (CalendarUnit.MONTH, 12),
}
_NOMINAL_DAYS = {CalendarUnit.DAY: 1, CalendarUnit.WEEK: 7, CalendarUnit.MONTH: 31}
_MAX_DAYS = 100 * 366
MAX_WIDTH_NS = _MAX_DAYS * _DAY_NS
"""The widest bucket: a century (wider ones cannot be placed on the calendar)."""
_BUCKET = re.compile(r"^\s*(\d{1,9})\s*(ms|s|mo|m|h|d|w|M|y)\s*$")


def parse_bucket(text: str, *, field: str) -> BucketSize:
    """Return the bucket ``text`` names: a width in nanoseconds or a calendar unit.

    Raises:
        PayloadError: not a positive whole number and a unit, or wider than a century.
    """
    match = _BUCKET.match(text)
    if match is None or int(match.group(1)) == 0:
        raise PayloadError(
            field,
            f"{field} must look like 30s, 1m, 1h or 1d, got {text!r:.40} "
            "(units ms, s, m, h; calendar units d, w, mo, y)",
        )
    count, unit = int(match.group(1)), match.group(2)
    if unit in _FIXED_NS:
        width = count * _FIXED_NS[unit]
        if width > MAX_WIDTH_NS:
            raise PayloadError(field, f"{field} {text.strip()!r} is wider than a century")
        return width
    calendar_unit, factor = _CALENDAR[unit]
    calendar = Calendar(calendar_unit, count * factor)
    if calendar.count * _NOMINAL_DAYS[calendar_unit] > _MAX_DAYS:
        raise PayloadError(field, f"{field} {text.strip()!r} is wider than a century")
    return calendar


def bucket_count(start_ns: int, end_ns: int, bucket: BucketSize) -> int:
    """How many buckets of a fixed width cover ``[start_ns, end_ns)`` (about, in a zone).

    Calendar buckets count 0 here: they are few, and the historian bounds them itself.
    """
    if isinstance(bucket, Calendar):
        return 0
    return (end_ns - 1) // bucket - start_ns // bucket + 1


def parse_aggregates(text: str | None, *, field: str = "agg") -> tuple[list[Aggregate], bool]:
    """Return the aggregates a comma-separated list names (default avg), and whether it
    also names ``bad`` (the count of non-Good points, which is not an aggregate).

    Raises:
        PayloadError: an unknown name; the message lists the known ones.
    """
    names = [a.strip().lower() for a in (text or "").split(",") if a.strip()]
    chosen: list[Aggregate] = []
    bad = False
    for name in names:
        if name == BAD_COLUMN:
            bad = True
            continue
        try:
            chosen.append(Aggregate(name))
        except ValueError as err:
            known = ", ".join([*(a.value for a in Aggregate), BAD_COLUMN])
            raise PayloadError(
                field, f"unknown aggregate {name!r:.30}; choose from {known}"
            ) from err
    if not chosen and not bad:
        chosen = [Aggregate.AVG]
    return list(dict.fromkeys(chosen)), bad


def parse_tz(text: str | None, *, field: str = "tz") -> str | None:
    """Return the IANA time zone name ``text`` after checking it exists; blank or ``utc``
    (any case: Grafana's ``${__timezone}`` says ``utc``) mean UTC, returned as None.

    Raises:
        PayloadError: no such zone in the server's tz database.
    """
    if text is None or not text.strip() or text.strip().lower() == "utc":
        return None
    name = text.strip()
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as err:
        raise PayloadError(
            field, f"unknown time zone {name!r:.60}: use an IANA name like Europe/Berlin"
        ) from err
    return name


@contextmanager
def renamed_fields(names: Mapping[str, str]) -> Iterator[None]:
    """Re-raise the historian's :class:`PayloadError` naming the client's parameter.

    ``names`` maps the historian's argument (``bucket``, ``start``, ``end``, ``times``,
    ``aggregates``, ``paths``, ``tz``, ``method``) to the query parameter it came from.
    """
    try:
        yield
    except PayloadError as err:
        field = names.get(err.field, err.field)
        if field == err.field:
            raise
        raise PayloadError(field, err.message) from err


def non_empty_rows(table: pa.Table, columns: list[str]) -> npt.NDArray[np.bool_]:
    """Rows of a ``read_buckets`` table with something to show in ``columns``.

    A bucket is empty when every one of those columns is null, ``count`` and ``bad``
    being 0: no usable point, no point that is not Good, no value held (``twa``).
    """
    keep = np.zeros(table.num_rows, dtype=np.bool_)
    for name in columns:
        column = table.column(name).combine_chunks()
        if name in (Aggregate.COUNT.value, BAD_COLUMN):
            keep |= np.asarray(column.to_numpy(zero_copy_only=False)) > 0
        elif column.null_count:
            keep |= np.asarray(column.is_valid().to_numpy(zero_copy_only=False), dtype=np.bool_)
        else:
            keep[:] = True
    return keep
