"""DuckDBHistorian.write_acknowledged: exactly once per (edge, seq), answered after commit."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import duckdb
import numpy as np
import pytest

from shopfloor.errors import HistorianError, PayloadError, UnknownTagError
from shopfloor.model import PointBatch
from shopfloor.server.historian.duckdb import DuckDBHistorian

SEC = 10**9
DAY = 86400 * SEC
T0 = 1_764_000_000 * SEC
END = T0 + 10 * DAY


def batch(seq: int, n: int = 50, tag: str = "plant/line/temp") -> PointBatch:
    """A batch whose points are unique to ``seq``, so stored copies can be counted."""
    ts = T0 + seq * 1000 * SEC + np.arange(n) * SEC
    return PointBatch.from_columns([tag], np.zeros(n), ts, np.full(n, float(seq)))


async def stored_per_seq(
    historian: DuckDBHistorian, tag: str = "plant/line/temp"
) -> dict[int, int]:
    """How many points of each seq the historian holds (the value encodes the seq)."""
    try:
        table = await historian.read_raw(tag, 0, END)
    except UnknownTagError:
        return {}
    values, counts = np.unique(table.column("value").to_numpy(), return_counts=True)
    return {int(v): int(c) for v, c in zip(values, counts, strict=True)}


def ledger_rows(path: Path) -> list[tuple[str, int, int]]:
    with duckdb.connect(str(path), read_only=True) as con:
        rows = con.execute("SELECT edge, seq, points FROM ingest_ledger ORDER BY edge, seq")
        return [(str(e), int(s), int(p)) for e, s, p in rows.fetchall()]


@pytest.fixture
async def historian(tmp_path: Path) -> AsyncIterator[DuckDBHistorian]:
    h = DuckDBHistorian(tmp_path / "h.duckdb", flush_interval_s=60)
    await h.start()
    yield h
    await h.close()


async def test_same_batch_twice_in_sequence_is_stored_once(
    tmp_path: Path, historian: DuckDBHistorian
) -> None:
    first = await historian.write_acknowledged(batch(1), edge="e1", seq=1)
    again = await historian.write_acknowledged(batch(1), edge="e1", seq=1)
    other_edge = await historian.write_acknowledged(batch(1), edge="e2", seq=1)
    assert (first.accepted, first.duplicate) == (50, False)
    assert (again.accepted, again.duplicate) == (0, True)
    assert (other_edge.accepted, other_edge.duplicate) == (50, False)  # seq is per edge
    assert await stored_per_seq(historian) == {1: 100}
    stats = historian.ledger_stats()
    assert (stats["e1"].batches, stats["e1"].points, stats["e1"].duplicates) == (1, 50, 1)
    await historian.close()
    assert ledger_rows(tmp_path / "h.duckdb") == [("e1", 1, 50), ("e2", 1, 50)]


async def test_duplicates_within_one_coalesced_commit(tmp_path: Path) -> None:
    # an ack waits up to 1 s for company: every write below lands in one commit
    h = DuckDBHistorian(tmp_path / "h.duckdb", flush_interval_s=60, ack_delay_s=1.0)
    await h.start()
    try:
        before = h.stats().flushes
        seqs = [1, 1, 2, 1, 3, 2]
        receipts = await asyncio.gather(
            *(h.write_acknowledged(batch(s), edge="e", seq=s) for s in seqs)
        )
        assert h.stats().flushes == before + 1
        assert [r.duplicate for r in receipts] == [False, True, False, True, False, True]
        assert sum(r.accepted for r in receipts) == 150
        assert await stored_per_seq(h) == {1: 50, 2: 50, 3: 50}
    finally:
        await h.close()
    assert ledger_rows(tmp_path / "h.duckdb") == [("e", 1, 50), ("e", 2, 50), ("e", 3, 50)]


async def test_concurrent_resends_across_commits_store_each_batch_once(
    historian: DuckDBHistorian,
) -> None:
    rng = np.random.default_rng(11)
    seqs = rng.permutation(np.repeat(np.arange(1, 41), 3)).tolist()  # every batch 3 times
    receipts = []
    for chunk in np.array_split(np.array(seqs), 12):  # waves: some share commits, some not
        receipts += await asyncio.gather(
            *(historian.write_acknowledged(batch(int(s)), edge="e", seq=int(s)) for s in chunk)
        )
    fresh = [s for s, r in zip(seqs, receipts, strict=True) if not r.duplicate]
    assert sorted(fresh) == list(range(1, 41))  # exactly one "stored" answer per batch
    assert await stored_per_seq(historian) == {s: 50 for s in range(1, 41)}
    assert historian.ledger_stats()["e"].duplicates == 80


async def test_ledger_survives_restart(tmp_path: Path) -> None:
    path = tmp_path / "h.duckdb"
    h = DuckDBHistorian(path, flush_interval_s=60)
    await h.start()
    for s in (1, 2, 3, 5):
        await h.write_acknowledged(batch(s), edge="e", seq=s)
    await h.close()
    h = DuckDBHistorian(path, flush_interval_s=60)
    await h.start()
    try:
        assert (await h.write_acknowledged(batch(2), edge="e", seq=2)).duplicate
        assert (await h.write_acknowledged(batch(5), edge="e", seq=5)).duplicate
        assert not (await h.write_acknowledged(batch(4), edge="e", seq=4)).duplicate  # a gap
        stats = h.ledger_stats()["e"]
        assert (stats.last_seq, stats.low_water, stats.gaps) == (5, 5, 0)
        assert await stored_per_seq(h) == {s: 50 for s in (1, 2, 3, 4, 5)}
    finally:
        await h.close()


async def test_answer_comes_after_the_commit_not_the_flush_interval(
    historian: DuckDBHistorian,
) -> None:
    await historian.write(batch(9, tag="plant/line/plain"))  # waits up to 60 s for commit
    await historian.write_acknowledged(batch(1), edge="e", seq=1)
    # a reader sees the acknowledged points the moment the answer is there ...
    assert await stored_per_seq(historian) == {1: 50}
    # ... and the plain batch queued before it went into the same commit
    assert await stored_per_seq(historian, "plant/line/plain") == {9: 50}
    await historian.write(batch(10, tag="plant/line/later"))
    with pytest.raises(UnknownTagError):  # plain writes alone wait for the interval
        await historian.read_raw("plant/line/later", 0, END)


async def test_failed_commit_fails_the_waiters_and_leaves_no_ledger_row(
    tmp_path: Path, historian: DuckDBHistorian
) -> None:
    path = tmp_path / "h.duckdb"
    await historian.write_acknowledged(batch(1), edge="e", seq=1)
    # A second connection holds an uncommitted update of the tag's latest row: DuckDB
    # refuses the writer's update of the same row ("Conflict on update"), a real failure.
    other = duckdb.connect(str(path), config={"memory_limit": "512MB"})
    try:
        other.begin()
        other.execute("UPDATE latest SET value = -1")
        results = await asyncio.gather(
            historian.write_acknowledged(batch(2), edge="e", seq=2),
            historian.write_acknowledged(batch(2), edge="e", seq=2),
            historian.write_acknowledged(batch(1), edge="e", seq=1),  # committed before
            return_exceptions=True,
        )
        other.rollback()
        assert isinstance(results[0], HistorianError)
        assert isinstance(results[1], HistorianError)  # its twin stood on the same commit
        assert not isinstance(results[2], BaseException)
        assert results[2].duplicate
        rows = other.execute("SELECT seq FROM ingest_ledger ORDER BY seq").fetchall()
        assert rows == [(1,)]
        assert await stored_per_seq(historian) == {1: 50}
        # the edge keeps the batch and sends it again: now it is stored, once
        again = await historian.write_acknowledged(batch(2), edge="e", seq=2)
        assert (again.accepted, again.duplicate) == (50, False)
        assert await stored_per_seq(historian) == {1: 50, 2: 50}
    finally:
        other.close()


async def test_retention_prunes_old_rows_and_very_late_batches_count_as_duplicates(
    tmp_path: Path,
) -> None:
    path = tmp_path / "h.duckdb"
    now = [T0]
    h = DuckDBHistorian(path, flush_interval_s=60, ledger_retention_s=86400, clock=lambda: now[0])
    await h.start()
    for s in (1, 2, 4):  # 3 never arrives: the edge dropped it
        await h.write_acknowledged(batch(s), edge="e", seq=s)
    now[0] = T0 + DAY + 120 * SEC  # more than a day (and a minute) later
    await h.write_acknowledged(batch(5), edge="e", seq=5)
    assert await h.prune_ledger() == 3  # seqs 1, 2, 4: older than a day, below the mark
    stats = h.ledger_stats()["e"]
    assert (stats.low_water, stats.abandoned, stats.gaps) == (5, 1, 0)
    # seq 3 arriving now, a day after seq 4 was committed, is taken as applied (see
    # ledger.py); an edge whose outbox keeps batches less than a day never sends it
    assert (await h.write_acknowledged(batch(3), edge="e", seq=3)).duplicate
    await h.close()
    assert ledger_rows(path) == [("e", 5, 50)]
    with duckdb.connect(str(path), read_only=True) as con:
        assert con.execute("SELECT edge, low_water FROM ingest_low_water").fetchall() == [("e", 5)]
    h = DuckDBHistorian(path, flush_interval_s=60, ledger_retention_s=86400, clock=lambda: now[0])
    await h.start()
    try:
        for s in (1, 3, 4, 5):  # pruned, given up, pruned, kept: all applied still
            assert (await h.write_acknowledged(batch(s), edge="e", seq=s)).duplicate
        assert not (await h.write_acknowledged(batch(6), edge="e", seq=6)).duplicate
        assert await stored_per_seq(h) == {s: 50 for s in (1, 2, 4, 5, 6)}
    finally:
        await h.close()


async def test_empty_batch_still_takes_its_seq(historian: DuckDBHistorian) -> None:
    """An edge must be able to retire an empty batch: the ledger records it all the same."""
    first = await historian.write_acknowledged(PointBatch.empty(), edge="e", seq=1)
    assert (first.accepted, first.duplicate) == (0, False)
    assert (await historian.write_acknowledged(batch(1), edge="e", seq=1)).duplicate
    assert await stored_per_seq(historian) == {}
    assert historian.ledger_stats()["e"].last_seq == 1


@pytest.mark.parametrize(("edge", "seq", "field"), [("", 1, "edge"), ("e", 0, "seq")])
async def test_bad_identity_is_a_payload_error(
    historian: DuckDBHistorian, edge: str, seq: int, field: str
) -> None:
    with pytest.raises(PayloadError) as info:
        await historian.write_acknowledged(batch(1), edge=edge, seq=seq)
    assert info.value.field == field
