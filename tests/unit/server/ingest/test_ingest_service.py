"""The ingestor: checks a batch whole, publishes it live, then stores it; clock sanity."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import numpy as np
import pyarrow as pa
import pytest

from shopfloor.errors import IngestBusy, PayloadError, UnknownTagError
from shopfloor.model import LiveBatch, PointBatch, Quality
from shopfloor.runtime.channels import Channel
from shopfloor.server.analytics.calc import Calculation, Calculator
from shopfloor.server.historian.duckdb import DuckDBHistorian
from shopfloor.server.ingest import service
from shopfloor.server.ingest.service import Ingestor

SEC = 1_000_000_000
NOW = int(datetime(2025, 6, 1, tzinfo=UTC).timestamp()) * SEC


@pytest.fixture
async def historian() -> AsyncIterator[DuckDBHistorian]:
    h = DuckDBHistorian(None, flush_interval_s=0.05)
    await h.start()
    yield h
    await h.close()


@pytest.fixture
def live() -> Channel[LiveBatch]:
    return Channel("live", maxsize=16)


@pytest.fixture
def ingestor(historian: DuckDBHistorian, live: Channel[LiveBatch]) -> Ingestor:
    return Ingestor(historian, live, max_future_s=300, clock=lambda: NOW)


async def stored_paths(historian: DuckDBHistorian) -> list[str]:
    await historian.flush()
    return [t.path for t in await historian.tags()]


async def test_accepted_batch_is_stored_then_published(
    historian: DuckDBHistorian, live: Channel[LiveBatch], ingestor: Ingestor
) -> None:
    batch = PointBatch.from_columns(
        ["a/x", "a/y"], [0, 1, 0], [NOW - 2 * SEC, NOW - SEC, NOW], [1.0, 2.0, 3.0]
    )
    async with live.subscribe("test") as sub:
        result = await ingestor.ingest(batch, source="edge-1")
        assert result.accepted == 3
        item = await sub.get()
        assert item.batch is batch
        assert (item.historical, item.edge) == (False, None)
    await historian.flush()
    table = await historian.read_raw("a/x", 0, NOW + 1)
    assert table.column("value").to_pylist() == [1.0, 3.0]
    assert table.column("ts").cast(pa.int64()).to_pylist() == [NOW - 2 * SEC, NOW]
    stats = ingestor.stats()
    assert (stats.batches, stats.points_accepted, stats.batches_rejected) == (1, 3, 0)


@pytest.mark.parametrize(
    ("tags", "field"),
    [
        (["a/x", "a//y"], "tags[1]"),
        (["a/x", " a/y"], "tags[1]"),
        (["a/#"], "tags[0]"),
        (["a/x", "a/x"], "tags"),
    ],
)
async def test_bad_paths_reject_the_whole_batch(
    historian: DuckDBHistorian,
    live: Channel[LiveBatch],
    ingestor: Ingestor,
    tags: list[str],
    field: str,
) -> None:
    batch = PointBatch.from_columns(
        tags, np.arange(len(tags)), [NOW] * len(tags), [1.0] * len(tags)
    )
    with pytest.raises(PayloadError) as info:
        await ingestor.ingest(batch, source="edge-1")
    assert info.value.field == field
    assert await stored_paths(historian) == []
    assert live.published == 0
    stats = ingestor.stats()
    assert (stats.batches_rejected, stats.points_rejected, stats.points_accepted) == (
        1,
        len(tags),
        0,
    )


@pytest.mark.parametrize(
    ("offsets_s", "count", "words"),
    [
        ([0, -26 * 365 * 86400, 0], 1, "before 2000-01-01"),  # 1999: a clock never set
        ([0, 75 * 365 * 86400, 80 * 365 * 86400], 2, "2100-01-01"),  # 2100 and later
    ],
)
async def test_timestamps_out_of_range_are_counted_and_named(
    historian: DuckDBHistorian,
    ingestor: Ingestor,
    offsets_s: list[int],
    count: int,
    words: str,
) -> None:
    ts = [NOW + o * SEC for o in offsets_s]
    batch = PointBatch.from_columns(["a/x"], [0] * len(ts), ts, [1.0] * len(ts))
    with pytest.raises(PayloadError) as info:
        await ingestor.ingest(batch, source="edge-1")
    assert info.value.field == "ts"
    assert f"{count} of {len(ts)}" in info.value.message
    assert words in info.value.message
    with pytest.raises(UnknownTagError):
        await historian.read_raw("a/x", 0, NOW * 2)


async def test_just_inside_the_limits_is_accepted_unflagged(
    historian: DuckDBHistorian, ingestor: Ingestor
) -> None:
    earliest = int(datetime(2000, 1, 1, tzinfo=UTC).timestamp()) * SEC
    batch = PointBatch.from_columns(["a/x"], [0, 0], [earliest, NOW + 300 * SEC], [1.0, 2.0])
    result = await ingestor.ingest(batch, source="e")
    assert (result.accepted, result.future_points) == (2, 0)
    await historian.flush()
    table = await historian.read_raw("a/x", 0, NOW * 2)
    assert table.column("quality").to_pylist() == [0, 0]


async def test_future_points_are_stored_flagged_not_refused(
    historian: DuckDBHistorian, live: Channel[LiveBatch], ingestor: Ingestor
) -> None:
    """A wrong device clock must not quarantine the good points beside it."""
    ahead = NOW + 3600 * SEC  # an hour ahead: a wrong clock, not a forecast
    bad = int(Quality.BAD_SENSOR_FAILURE)
    rows = [
        ("a/x", NOW - SEC, 1.0, 0),  # fine
        ("a/y", ahead, 2.0, 0),  # Good and ahead: flagged
        ("a/y", ahead + SEC, 3.0, bad),  # Bad and ahead: keeps its more telling code
        ("a/y", NOW + 301 * SEC, 4.0, int(Quality.UNCERTAIN_LAST_USABLE_VALUE)),  # kept
    ]
    batch = PointBatch.from_points(rows)
    async with live.subscribe("test") as sub:
        result = await ingestor.ingest(batch, source="edge-9", edge="edge-9", seq=1)
        published = (await sub.get()).batch
    assert (result.accepted, result.future_points) == (4, 3)
    stored = await historian.read_raw("a/y", 0, NOW * 2)
    # stored with their own timestamps, never "now"
    assert stored.column("ts").cast(pa.int64()).to_pylist() == [
        NOW + 301 * SEC,
        ahead,
        ahead + SEC,
    ]
    assert stored.column("quality").to_pylist() == [
        int(Quality.UNCERTAIN_LAST_USABLE_VALUE),
        int(Quality.UNCERTAIN),
        bad,
    ]
    assert (await historian.read_raw("a/x", 0, NOW * 2)).column("quality").to_pylist() == [0]
    assert published.quality.tolist() == [0, int(Quality.UNCERTAIN), bad, rows[3][3]]
    assert batch.quality.tolist() == [r[3] for r in rows]  # the caller's batch is untouched
    view = ingestor.edges.view("edge-9")
    assert view is not None
    assert view.future_points == 3
    assert ingestor.stats().future_points == 3


async def test_acknowledged_batch_is_published_before_its_commit_with_its_flag(
    historian: DuckDBHistorian, live: Channel[LiveBatch], ingestor: Ingestor
) -> None:
    batch = PointBatch.from_points([("a/x", NOW - SEC, 1.0, 0), ("a/x", NOW, 2.0, 0)])
    async with live.subscribe("test") as sub:
        storing = asyncio.create_task(
            ingestor.ingest(batch, source="e", edge="e-1", seq=7, historical=True)
        )
        published = await sub.get()  # alarms and screens do not wait for storage
        assert not storing.done()
        first = await storing
        again = await ingestor.ingest(batch, source="e", edge="e-1", seq=7, historical=True)
        assert (first.accepted, first.duplicate) == (2, False)
        assert (again.accepted, again.duplicate) == (0, True)
        items = [published, *sub.drain()]
    # a resent batch is published again: live consumers take only points newer than theirs
    assert [(i.historical, i.edge, len(i.batch)) for i in items] == [(True, "e-1", 2)] * 2
    # committed when the answer came, without any flush
    assert len(await historian.read_raw("a/x", 0, NOW * 2)) == 2
    stats = ingestor.stats()
    assert (stats.batches, stats.points_accepted, stats.duplicates) == (1, 2, 1)


@pytest.mark.parametrize(
    ("edge", "seq", "field"),
    [
        ("bad edge id", 1, "edge"),
        ("-leading-dash", 1, "edge"),
        ("e" * 65, 1, "edge"),
        ("e", 0, "seq"),
    ],
)
async def test_bad_batch_identity_is_refused(
    historian: DuckDBHistorian, ingestor: Ingestor, edge: str, seq: int, field: str
) -> None:
    batch = PointBatch.from_points([("a/x", NOW, 1.0, 0)])
    with pytest.raises(PayloadError) as info:
        await ingestor.ingest(batch, source="e", edge=edge, seq=seq)
    assert info.value.field == field
    assert historian.ledger_stats() == {}
    assert len(ingestor.edges) == 0


async def test_admit_refuses_while_the_historian_is_behind(live: Channel[LiveBatch]) -> None:
    historian = DuckDBHistorian(None, flush_interval_s=60)  # nothing commits on its own
    await historian.start()
    try:
        ingestor = Ingestor(historian, live, max_pending_points=100, retry_after_s=2.5)
        ingestor.admit()
        batch = PointBatch.from_columns(["a/x"], np.zeros(100), NOW - np.arange(100), np.ones(100))
        await ingestor.ingest(batch, source="local")  # the in-process edge is never refused
        with pytest.raises(IngestBusy) as info:
            ingestor.admit()
        assert info.value.retry_after_s == 3  # whole seconds, rounded up
        assert "100 points" in info.value.reason
        await historian.flush()
        ingestor.admit()
        assert ingestor.stats().busy_refusals == 1
    finally:
        await historian.close()


async def test_paths_are_checked_once_per_distinct_tag(
    ingestor: Ingestor, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []
    real = service.validate_path

    def counting(path: str) -> str:
        calls.append(path)
        return real(path)

    monkeypatch.setattr(service, "validate_path", counting)
    n = 30_000
    batch = PointBatch.from_columns(
        ["a/x", "a/y", "a/z"], np.arange(n) % 3, NOW - np.arange(n), np.arange(n, dtype=float)
    )
    await ingestor.ingest(batch, source="e")
    await ingestor.ingest(batch, source="e")
    assert sorted(calls) == ["a/x", "a/y", "a/z"]


async def test_empty_batch_is_accepted_and_not_published(
    live: Channel[LiveBatch], ingestor: Ingestor
) -> None:
    assert (await ingestor.ingest(PointBatch.empty(), source="e")).accepted == 0
    assert live.published == 0


async def test_derived_points_join_their_batch_published_and_stored_once(
    historian: DuckDBHistorian, live: Channel[LiveBatch]
) -> None:
    calculator = Calculator([Calculation("a/double", "2 * x", {"x": "a/x"})])
    ingestor = Ingestor(historian, live, clock=lambda: NOW, derive=calculator.derive)
    batch = PointBatch.from_columns(
        ["a/x", "a/y"], [0, 1, 0], [NOW - SEC, NOW - SEC, NOW], [1.0, 5.0, 3.0]
    )
    async with live.subscribe("test") as sub:
        result = await ingestor.ingest(batch, source="edge-1", edge="edge-1", seq=1)
        again = await ingestor.ingest(batch, source="edge-1", edge="edge-1", seq=1)
        first, second = sub.drain()
    assert (result.accepted, again.duplicate) == (3, True)  # what the edge sent
    assert ingestor.stats().points_accepted == 3
    assert ingestor.stats().derived_points == 4  # 2 per send: the resend derives again
    published = first.batch
    doubled = published.value[published.tag_index == published.tags.index("a/double")]
    assert doubled.tolist() == [2.0, 6.0]
    assert len(second.batch) == 5
    table = await historian.read_raw("a/double", 0, NOW + 1)
    assert table.column("value").to_pylist() == [2.0, 6.0]  # the duplicate stored nothing
