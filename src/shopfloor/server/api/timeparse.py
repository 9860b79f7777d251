"""Times and durations at the API boundary: text in, int64 UTC nanoseconds inside.

Accepted times are ISO 8601 (``2026-01-01T08:00:00Z``, ``2026-01-01T09:00:00+01:00``,
``2026-01-01``; a time without an offset is UTC), ``now``, and times relative to now
(``-1h``, ``now-15m``, ``-500ms``). Durations are a whole number and a unit: ``500ms``,
``30s``, ``1m``, ``1h``, ``1d``.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

from shopfloor.errors import PayloadError

__all__ = ["format_ns", "iso_strings", "parse_duration", "parse_time"]

# the formatting is pure and shared beyond the API (alarm messages, the UNS): it lives in model
from shopfloor.model.timefmt import format_ns, iso_strings

_UNIT_NS = {
    "ms": 1_000_000,
    "s": 1_000_000_000,
    "m": 60_000_000_000,
    "h": 3_600_000_000_000,
    "d": 86_400_000_000_000,
}
_DURATION = re.compile(r"^\s*(\d{1,12})\s*(ms|s|m|h|d)\s*$")
_RELATIVE = re.compile(r"^\s*(now)?\s*(?:([+-])\s*(\d{1,12})\s*(ms|s|m|h|d))?\s*$")
_FRACTION = re.compile(r"[.,](\d+)")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_NS_MIN = -(2**63)
_NS_MAX = 2**63 - 1
_TIME_HELP = "ISO 8601 like 2026-01-01T08:00:00Z, or relative like now, -1h or now-15m"


def parse_duration(text: str, *, field: str) -> int:
    """Return the duration ``text`` (``30s``, ``1m``, ``500ms``) in nanoseconds.

    Raises:
        PayloadError: not a positive whole number followed by ms, s, m, h or d.
    """
    match = _DURATION.match(text)
    if match is None or int(match.group(1)) == 0:
        raise PayloadError(field, f"{field} must look like 30s, 1m, 1h or 1d, got {text!r:.40}")
    return int(match.group(1)) * _UNIT_NS[match.group(2)]


def parse_time(text: str, *, now_ns: int, field: str) -> int:
    """Return the time ``text`` in UTC nanoseconds since the epoch.

    Args:
        text: ISO 8601 (no offset means UTC), ``now``, or relative (``-1h``, ``now-15m``).
        now_ns: what ``now`` means, in UTC nanoseconds.
        field: the parameter's name, for the error.

    Raises:
        PayloadError: the text is neither, or the time is outside 1677..2262 (int64 ns).
    """
    relative = _RELATIVE.match(text)
    if relative is not None and (relative.group(1) or relative.group(2)):
        ns = now_ns
        if relative.group(2):
            delta = int(relative.group(3)) * _UNIT_NS[relative.group(4)]
            ns = ns - delta if relative.group(2) == "-" else ns + delta
    else:
        ns = _parse_iso(text, field=field)
    if not _NS_MIN <= ns <= _NS_MAX:
        raise PayloadError(field, f"{field} is outside the years 1677 to 2262, got {text!r:.40}")
    return ns


def _parse_iso(text: str, *, field: str) -> int:
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError as err:
        raise PayloadError(field, f"{field} must be {_TIME_HELP}; got {text!r:.40}") from err
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    micros = (moment - _EPOCH) // _MICROSECOND
    # datetime keeps microseconds; the digits beyond them are added back exactly.
    fraction = _FRACTION.search(text)
    extra_ns = int(fraction.group(1)[6:9].ljust(3, "0")) if fraction else 0
    return int(micros) * 1000 + extra_ns


_MICROSECOND = datetime(1970, 1, 1, 0, 0, 0, 1, tzinfo=UTC) - _EPOCH
