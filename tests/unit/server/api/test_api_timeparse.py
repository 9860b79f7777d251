"""Times and durations in query parameters."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from shopfloor.errors import PayloadError
from shopfloor.server.api.timeparse import iso_strings, parse_duration, parse_time

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def ns(moment: datetime) -> int:
    return (moment - EPOCH) // timedelta(microseconds=1) * 1000


NOW = ns(datetime(2026, 3, 1, 12, 0, tzinfo=UTC))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-01-01T08:00:00Z", ns(datetime(2026, 1, 1, 8, tzinfo=UTC))),
        ("2026-01-01T09:00:00+01:00", ns(datetime(2026, 1, 1, 8, tzinfo=UTC))),
        ("2026-01-01T08:00:00", ns(datetime(2026, 1, 1, 8, tzinfo=UTC))),  # naive is UTC
        ("2026-01-01", ns(datetime(2026, 1, 1, tzinfo=UTC))),
        ("2026-01-01T08:00:00.123456789Z", ns(datetime(2026, 1, 1, 8, tzinfo=UTC)) + 123_456_789),
        ("2026-01-01T08:00:00.5Z", ns(datetime(2026, 1, 1, 8, tzinfo=UTC)) + 500_000_000),
        ("now", NOW),
        ("-1h", NOW - 3_600_000_000_000),
        ("now-15m", NOW - 900_000_000_000),
        ("now+30s", NOW + 30_000_000_000),
        ("-500ms", NOW - 500_000_000),
        ("-2d", NOW - 2 * 86_400_000_000_000),
    ],
)
def test_parse_time(text: str, expected: int) -> None:
    assert parse_time(text, now_ns=NOW, field="start") == expected


@pytest.mark.parametrize(
    "text", ["yesterday", "", "-1x", "now-", "2026-02-30", "1 hour ago", "3000-01-01"]
)
def test_parse_time_errors_name_the_field(text: str) -> None:
    with pytest.raises(PayloadError) as info:
        parse_time(text, now_ns=NOW, field="end")
    assert info.value.field == "end"


@pytest.mark.parametrize(
    ("text", "expected_s"),
    [("500ms", 0.5), ("30s", 30), ("1m", 60), ("2h", 7200), ("1d", 86400)],
)
def test_parse_duration(text: str, expected_s: float) -> None:
    assert parse_duration(text, field="bucket") == int(expected_s * 1e9)


@pytest.mark.parametrize("text", ["5x", "0s", "1.5m", "m", "-1m", "1 minute"])
def test_parse_duration_errors(text: str) -> None:
    with pytest.raises(PayloadError) as info:
        parse_duration(text, field="bucket")
    assert info.value.field == "bucket"
    assert text in info.value.message


def test_iso_strings_keep_distinct_times_distinct() -> None:
    t = ns(datetime(2026, 1, 1, tzinfo=UTC))
    assert iso_strings(np.array([t, t + 1_000_000])) == [
        "2026-01-01T00:00:00.000Z",
        "2026-01-01T00:00:00.001Z",
    ]
    assert iso_strings(np.array([t, t + 1000])) == [
        "2026-01-01T00:00:00.000000Z",
        "2026-01-01T00:00:00.000001Z",
    ]
    assert iso_strings(np.array([t + 7])) == ["2026-01-01T00:00:00.000000007Z"]
    assert iso_strings(np.array([], dtype=np.int64)) == []
