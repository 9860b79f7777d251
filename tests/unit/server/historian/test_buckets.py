"""Bucket edges against independent computations: datetime/zoneinfo and a minute-by-minute scan."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shopfloor.errors import PayloadError
from shopfloor.server.historian.base import Calendar, CalendarUnit
from shopfloor.server.historian.buckets import make_buckets, zone

SECOND = 10**9
MINUTE = 60 * SECOND
HOUR = 60 * MINUTE
DAY = 24 * HOUR


def local_ns(tz: str, day: dt.date, hour: int = 0, minute: int = 0) -> int:
    """The instant the wall clock of ``tz`` shows ``day hour:minute`` (the first time)."""
    moment = dt.datetime(day.year, day.month, day.day, hour, minute, tzinfo=ZoneInfo(tz))
    return int(moment.timestamp()) * SECOND


def offset_ns(z: ZoneInfo, t: int) -> int:
    offset = dt.datetime.fromtimestamp(t // SECOND, z).utcoffset()
    assert offset is not None
    return int(offset.total_seconds()) * SECOND


def scanned_edges(tz: str, start: int, end: int, width: int) -> list[int]:
    """Edges found by reading the wall clock every minute.

    An instant is an edge when its wall-clock time is a multiple of ``width``, or when the
    clock jumped forward over such a time in the minute before it.
    """
    z = ZoneInfo(tz)
    lo = (start - width - 2 * HOUR) // MINUTE * MINUTE
    hi = end + width + 2 * HOUR
    edges = []
    previous_wall = lo - MINUTE + offset_ns(z, lo - MINUTE)
    for t in range(lo, hi, MINUTE):
        wall = t + offset_ns(z, t)
        skipped = wall - previous_wall > MINUTE and (wall - 1) // width * width > previous_wall
        if wall % width == 0 or skipped:
            edges.append(t)
        previous_wall = wall
    first = max(i for i, e in enumerate(edges) if e <= start)
    last = min(i for i, e in enumerate(edges) if e >= end)
    return edges[first : last + 1]


# zones with DST, without, with half- and quarter-hour offsets, with a 30-minute DST shift
DST_DAYS = [
    ("Europe/Berlin", dt.date(2024, 3, 31), 23),
    ("Europe/Berlin", dt.date(2024, 10, 27), 25),
    ("America/New_York", dt.date(2024, 3, 10), 23),
    ("America/New_York", dt.date(2024, 11, 3), 25),
]
SCANNED = [
    *[(tz, day) for tz, day, _ in DST_DAYS],
    ("Asia/Kolkata", dt.date(2024, 3, 31)),
    ("Asia/Kathmandu", dt.date(2024, 3, 31)),
    ("Australia/Lord_Howe", dt.date(2024, 4, 7)),
    ("Australia/Lord_Howe", dt.date(2024, 10, 6)),
    ("Pacific/Chatham", dt.date(2024, 4, 7)),
    ("Pacific/Chatham", dt.date(2024, 9, 29)),
    ("America/Santiago", dt.date(2024, 9, 8)),
    ("UTC", dt.date(2024, 3, 31)),
]


@pytest.mark.parametrize(("tz", "day", "hours"), DST_DAYS)
def test_a_day_runs_local_midnight_to_local_midnight(tz: str, day: dt.date, hours: int) -> None:
    start = local_ns(tz, day - dt.timedelta(days=3), 7, 13)
    end = local_ns(tz, day + dt.timedelta(days=3), 1)
    days = [day + dt.timedelta(days=i) for i in range(-3, 5)]
    expected = [local_ns(tz, d) for d in days]
    for bucket in (DAY, Calendar(CalendarUnit.DAY)):
        edges = make_buckets(start, end, bucket, tz=tz).edges()
        assert edges.tolist() == expected
        length = dict(zip(days, np.diff(edges) // HOUR, strict=False))
        assert length[day] == hours
        assert {length[d] for d in days[:-1] if d != day} == {24}


@pytest.mark.parametrize(
    "tz", ["America/Santiago", "Australia/Lord_Howe", "Pacific/Chatham", "Asia/Kathmandu"]
)
def test_days_in_odd_zones_start_where_zoneinfo_puts_local_midnight(tz: str) -> None:
    # Santiago changes at midnight: that day begins at the transition (fold=0)
    first = dt.date(2024, 3, 25)
    days = [first + dt.timedelta(days=i) for i in range(200)]
    edges = make_buckets(local_ns(tz, first), local_ns(tz, days[-1]), DAY, tz=tz).edges()
    assert edges.tolist() == [local_ns(tz, d) for d in days]


@pytest.mark.parametrize(("tz", "day"), SCANNED)
@pytest.mark.parametrize("width", [15 * MINUTE, 30 * MINUTE, HOUR, 3 * HOUR])
def test_sub_day_buckets_follow_the_wall_clock(tz: str, day: dt.date, width: int) -> None:
    start = local_ns("UTC", day - dt.timedelta(days=1), 5, 7) + 13 * SECOND
    end = start + 2 * DAY + 11 * MINUTE
    edges = make_buckets(start, end, width, tz=tz).edges()
    assert edges.tolist() == scanned_edges(tz, start, end, width)


def test_the_repeated_hour_has_its_own_hourly_buckets_but_not_its_own_day() -> None:
    tz, day = "Europe/Berlin", dt.date(2024, 10, 27)
    start, end = local_ns(tz, day), local_ns(tz, day + dt.timedelta(days=1))
    hourly = make_buckets(start, end, HOUR, tz=tz)
    assert hourly.count == 25
    assert make_buckets(start, end, DAY, tz=tz).count == 1


def test_half_hour_zones_put_hourly_edges_at_half_past_utc() -> None:
    start = local_ns("UTC", dt.date(2024, 6, 1))
    edges = make_buckets(start, start + 6 * HOUR, HOUR, tz="Asia/Kolkata").edges()
    assert set((edges % HOUR).tolist()) == {30 * MINUTE}


@pytest.mark.parametrize("width", [SECOND, 7 * SECOND, HOUR, 10**6 * SECOND])
def test_utc_buckets_are_multiples_since_the_epoch_also_before_1970(width: int) -> None:
    for start, end in [
        (-40 * SECOND, 40 * SECOND),
        (1_700_000_001 * SECOND, 1_700_090_000 * SECOND),
    ]:
        buckets = make_buckets(start, end, width)
        edges = buckets.edges()
        first = start - start % width  # Python's % floors
        assert edges[0] == first
        assert edges.tolist() == list(range(first, edges[-1] + 1, width))
        assert edges[-2] < end <= edges[-1]
        ts = np.array([start, end - 1, (start + end) // 2], dtype=np.int64)
        index = buckets.index(ts)
        assert np.all(buckets.starts(index) <= ts)
        assert np.all(ts < buckets.ends(index))


@pytest.mark.parametrize("tz", ["Europe/Berlin", "America/New_York", "Asia/Kathmandu", None])
def test_months_quarters_and_weeks_follow_the_calendar(tz: str | None) -> None:
    name = tz or "UTC"
    start = local_ns(name, dt.date(2023, 11, 17), 9)
    end = local_ns(name, dt.date(2025, 2, 3), 3)
    months = make_buckets(start, end, Calendar(CalendarUnit.MONTH), tz=tz).edges()
    expected = [
        local_ns(name, dt.date(2023 + (10 + i) // 12, (10 + i) % 12 + 1, 1)) for i in range(17)
    ]
    assert months.tolist() == expected
    quarters = make_buckets(start, end, Calendar(CalendarUnit.MONTH, 3), tz=tz).edges()
    firsts = [(2023, 10), (2024, 1), (2024, 4), (2024, 7), (2024, 10), (2025, 1), (2025, 4)]
    assert quarters.tolist() == [local_ns(name, dt.date(y, m, 1)) for y, m in firsts]
    weeks = make_buckets(start, end, Calendar(CalendarUnit.WEEK), tz=tz).edges()
    monday = dt.date(2023, 11, 13)
    assert weeks.tolist() == [
        local_ns(name, monday + dt.timedelta(weeks=i)) for i in range(len(weeks))
    ]
    assert weeks[-2] < end <= weeks[-1]


def test_bad_buckets_and_zones_name_the_field() -> None:
    with pytest.raises(PayloadError) as err:
        zone("Mars/Olympus_Mons")
    assert err.value.field == "tz"
    for bucket in (0, -5, Calendar(CalendarUnit.DAY, 0)):
        with pytest.raises(PayloadError) as err:
            make_buckets(0, DAY, bucket, field="bucket_ns")
        assert err.value.field == "bucket_ns"
    year = local_ns("UTC", dt.date(2024, 1, 1))  # DST changes: edges to compute
    with pytest.raises(PayloadError, match="more than"):
        make_buckets(year, year + 400 * DAY, SECOND, tz="Europe/Berlin")
    assert make_buckets(5, 5, HOUR).count == 0


ZONES = ["Europe/Berlin", "America/New_York", "Asia/Kolkata", "Australia/Lord_Howe", "UTC"]


@settings(max_examples=40, deadline=None)
@given(
    tz=st.sampled_from(ZONES),
    start=st.integers(1_577_836_800, 1_893_456_000).map(lambda s: s * SECOND),
    length=st.integers(1, 2 * 86_400).map(lambda s: s * SECOND),
    width=st.sampled_from([5 * MINUTE, 20 * MINUTE, HOUR, 2 * HOUR, 6 * HOUR]),
)
def test_random_ranges_match_the_minute_scan(tz: str, start: int, length: int, width: int) -> None:
    edges = make_buckets(start, start + length, width, tz=tz).edges()
    assert edges.tolist() == scanned_edges(tz, start, start + length, width)
