"""The ingestor: checks a batch whole, stores it, then publishes it live."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime

import numpy as np
import pyarrow as pa
import pytest

from shopfloor.errors import PayloadError, UnknownTagError
from shopfloor.model import PointBatch
from shopfloor.runtime.channels import Channel
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
def live() -> Channel[PointBatch]:
    return Channel("live", maxsize=16)


@pytest.fixture
def ingestor(historian: DuckDBHistorian, live: Channel[PointBatch]) -> Ingestor:
    return Ingestor(historian, live, max_future_s=300, clock=lambda: NOW)


async def stored_paths(historian: DuckDBHistorian) -> list[str]:
    await historian.flush()
    return [t.path for t in await historian.tags()]


async def test_accepted_batch_is_stored_then_published(
    historian: DuckDBHistorian, live: Channel[PointBatch], ingestor: Ingestor
) -> None:
    batch = PointBatch.from_columns(
        ["a/x", "a/y"], [0, 1, 0], [NOW - 2 * SEC, NOW - SEC, NOW], [1.0, 2.0, 3.0]
    )
    async with live.subscribe("test") as sub:
        result = await ingestor.ingest(batch, source="edge-1")
        assert result.accepted == 3
        assert await sub.get() is batch
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
    live: Channel[PointBatch],
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
        ([0, 301, 400], 2, "in the future"),
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


async def test_just_inside_the_limits_is_accepted(ingestor: Ingestor) -> None:
    earliest = int(datetime(2000, 1, 1, tzinfo=UTC).timestamp()) * SEC
    batch = PointBatch.from_columns(["a/x"], [0, 0], [earliest, NOW + 300 * SEC], [1.0, 2.0])
    assert (await ingestor.ingest(batch, source="e")).accepted == 2


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
    live: Channel[PointBatch], ingestor: Ingestor
) -> None:
    assert (await ingestor.ingest(PointBatch.empty(), source="e")).accepted == 0
    assert live.published == 0
