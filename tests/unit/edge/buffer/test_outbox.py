"""The outbox keeps exactly the unacknowledged batches, across restarts, on both stores."""

from __future__ import annotations

import asyncio
import logging
import random
import re
import shutil
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from shopfloor.edge.buffer import (
    Durability,
    DurableOutbox,
    FullPolicy,
    Lane,
    LogStore,
    OutboxFailed,
    SegmentLog,
    SqliteLog,
)
from shopfloor.edge.buffer.identity import ID_FILE
from shopfloor.edge.buffer.segments import HEADER_SIZE
from shopfloor.wire import OUTBOX_ID_PATTERN

StoreFactory = Callable[[Path], LogStore]

STORES: dict[str, StoreFactory] = {
    "segments": lambda d: SegmentLog(d, segment_bytes=4096),
    "sqlite": SqliteLog,
}


class FakeClock:
    """Wall time the test moves by hand."""

    def __init__(self, start_ns: int = 1_764_000_000_000_000_000) -> None:
        self.ns = start_ns

    def now_ns(self) -> int:
        return self.ns

    def monotonic(self) -> float:
        return self.ns / 1e9

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(0)


def payload(i: int, size: int = 100) -> bytes:
    """A distinct payload per batch, so a mix-up cannot pass unnoticed."""
    return (f"batch-{i}-".encode() * size)[:size]


@pytest.fixture(params=sorted(STORES))
def store_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


async def opened(
    directory: Path, kind: str, *, max_bytes: int = 1 << 30, **kwargs: object
) -> DurableOutbox:
    outbox = DurableOutbox(STORES[kind](directory), max_bytes=max_bytes, **kwargs)  # type: ignore[arg-type]
    await outbox.open()
    return outbox


@pytest.fixture
async def cleanup() -> AsyncIterator[list[DurableOutbox]]:
    boxes: list[DurableOutbox] = []
    yield boxes
    for box in boxes:
        await box.close()


async def test_append_peek_ack_reopen_keeps_exactly_the_unacked(
    tmp_path: Path, store_kind: str
) -> None:
    outbox = await opened(tmp_path, store_kind)
    seqs = [await outbox.append(payload(i), points=i + 1) for i in range(60)]
    assert seqs == list(range(1, 61))
    leased = await outbox.peek(25)
    assert [b.seq for b in leased] == list(range(1, 26))
    acked = {b.seq for b in leased if b.seq % 3 == 0}
    await outbox.ack(acked)
    outbox.release(b.seq for b in leased if b.seq not in acked)
    await outbox.close()

    again = await opened(tmp_path, store_kind)
    waiting = await again.peek(1000)
    expected = [s for s in seqs if s not in acked]
    assert [b.seq for b in waiting] == expected
    assert all(b.payload == payload(b.seq - 1) and b.points == b.seq for b in waiting)
    stats = again.stats()
    assert stats.batches == len(expected)
    assert stats.points == sum(expected)
    assert stats.acked_batches == len(acked)
    await again.close()


async def test_peek_leases_and_lanes(tmp_path: Path, store_kind: str) -> None:
    clock = FakeClock()
    outbox = await opened(tmp_path, store_kind, clock=clock)
    for i in range(10):
        await outbox.append(payload(i), points=1)
        clock.ns += 1_000_000_000
    newest = await outbox.peek(2, lane=Lane.NEWEST)
    assert [b.seq for b in newest] == [10, 9]
    recent = await outbox.peek(5, since_ns=clock.ns - 4_000_000_000)  # appended in the last 4 s
    assert [b.seq for b in recent] == [7, 8]  # 9 and 10 are leased already
    old = await outbox.peek(100, before_ns=clock.ns - 7_000_000_000)
    assert [b.seq for b in old] == [1, 2, 3]
    assert await outbox.peek(100, before_ns=clock.ns - 7_000_000_000) == []
    outbox.release([2])
    assert [b.seq for b in await outbox.peek(100)] == [2, 4, 5, 6]
    await outbox.close()


async def test_sequence_numbers_survive_restart_and_are_never_reused(
    tmp_path: Path, store_kind: str
) -> None:
    outbox = await opened(tmp_path, store_kind)
    first = [await outbox.append(payload(i), points=1) for i in range(5)]
    await outbox.ack(first)  # everything acknowledged: segments may be deleted
    await outbox.close()

    outbox = await opened(tmp_path, store_kind)
    second = [await outbox.append(payload(i), points=1) for i in range(3)]
    assert second == [6, 7, 8], "a clean restart continues without a gap"
    await outbox.abandon()  # killed: no clean close

    outbox = await opened(tmp_path, store_kind)
    third = await outbox.append(payload(0), points=1)
    assert third > 8, "after a crash numbering resumes above everything handed out"
    waiting = await outbox.peek(100)
    assert [b.seq for b in waiting] == [6, 7, 8, third]
    await outbox.close()


async def test_an_outbox_keeps_its_id_and_a_re_created_one_draws_a_new_id(
    tmp_path: Path, store_kind: str
) -> None:
    outbox = await opened(tmp_path / "box", store_kind)
    first_id = outbox.outbox_id
    assert re.fullmatch(OUTBOX_ID_PATTERN, first_id)
    await outbox.append(payload(1), points=1)
    await outbox.abandon()  # killed
    outbox = await opened(tmp_path / "box", store_kind)
    assert outbox.outbox_id == first_id, "the same outbox after a crash: the same id"
    await outbox.close()

    shutil.rmtree(tmp_path / "box")  # wiped: its seqs start at 1 again …
    outbox = await opened(tmp_path / "box", store_kind)
    assert await outbox.append(payload(1), points=1) == 1
    assert re.fullmatch(OUTBOX_ID_PATTERN, outbox.outbox_id)
    assert outbox.outbox_id != first_id, "… under a new id"
    await outbox.close()


async def test_an_outbox_from_before_ids_keeps_sending_without_one(
    tmp_path: Path, store_kind: str
) -> None:
    outbox = await opened(tmp_path / "box", store_kind)
    await outbox.append(payload(1), points=1)
    await outbox.close()
    (tmp_path / "box" / ID_FILE).unlink()  # as an outbox made by an older version
    outbox = await opened(tmp_path / "box", store_kind)
    assert outbox.outbox_id == "", "its resends keep the ledger key they always had"
    assert [b.seq for b in await outbox.peek(10)] == [1]
    await outbox.close()
    assert not (tmp_path / "box" / ID_FILE).exists()


async def test_acks_in_any_order_match_a_model_across_reopen(tmp_path: Path) -> None:
    """Thousands of batches acknowledged out of order (live lane and backlog lane)."""
    rng = random.Random(7)

    async def opened_fast() -> DurableOutbox:  # page-cache durability: this is about logic
        box = DurableOutbox(
            SegmentLog(tmp_path, durability=Durability.NONE, segment_bytes=4096),
            max_bytes=1 << 30,
        )
        await box.open()
        return box

    outbox = await opened_fast()
    model: dict[int, int] = {}
    for _round in range(6):
        for _ in range(1500):
            n = rng.randint(1, 50)
            seq = await outbox.append(payload(n, size=20), points=n)
            model[seq] = n
        leased = await outbox.peek(800, lane=rng.choice([Lane.OLDEST, Lane.NEWEST]))
        done = [b.seq for b in leased if rng.random() < 0.8]
        await outbox.ack(done)
        outbox.release(b.seq for b in leased if b.seq not in done)
        for seq in done:
            del model[seq]
        stats = outbox.stats()
        assert (stats.batches, stats.points) == (len(model), sum(model.values()))
    await outbox.abandon()  # even a crash keeps every batch not acknowledged

    again = await opened_fast()
    waiting = {b.seq: b.points for b in await again.peek(100_000)}
    assert set(model) <= set(waiting), "nothing unacknowledged is lost"
    await again.close()
    again = await opened_fast()
    await again.ack(seq for seq in list(waiting) if seq not in model)
    stats = again.stats()
    assert (stats.batches, stats.points) == (len(model), sum(model.values()))
    await again.close()


# ------------------------------------------------------------------- bounds
async def test_drop_oldest_drops_whole_oldest_batches_and_counts_exactly(
    tmp_path: Path,
) -> None:
    size = 200
    record = HEADER_SIZE + size
    outbox = await opened(tmp_path, "segments", max_bytes=10 * record)
    points = [random.Random(i).randint(1, 1000) for i in range(25)]
    for i, n in enumerate(points):
        await outbox.append(payload(i, size), points=n)
    stats = outbox.stats()
    assert stats.batches == 10
    assert stats.bytes == 10 * record
    assert stats.dropped_batches == 15
    assert stats.dropped_points == sum(points[:15])
    waiting = await outbox.peek(100)
    assert [b.seq for b in waiting] == list(range(16, 26)), "the newest ten are kept"
    await outbox.close()
    again = await opened(tmp_path, "segments", max_bytes=10 * record)
    assert again.stats().dropped_points == sum(points[:15]), "the count is persisted"
    await again.close()


async def test_drop_oldest_never_drops_a_batch_in_flight(tmp_path: Path) -> None:
    record = HEADER_SIZE + 100
    outbox = await opened(tmp_path, "segments", max_bytes=3 * record)
    for i in range(3):
        await outbox.append(payload(i), points=1)
    (in_flight,) = await outbox.peek(1)
    await outbox.append(payload(3), points=1)
    assert [b.seq for b in await outbox.peek(10)] == [3, 4]
    assert outbox.stats().dropped_batches == 1  # batch 2, not batch 1 which is in flight
    await outbox.ack([in_flight.seq])
    await outbox.close()


async def test_stop_reading_blocks_appends_until_acks_make_room(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="shopfloor.edge.buffer")
    record = HEADER_SIZE + 100
    outbox = await opened(
        tmp_path, "segments", max_bytes=4 * record, policy=FullPolicy.STOP_READING
    )
    for i in range(4):
        await outbox.append(payload(i), points=1)
    blocked = asyncio.create_task(outbox.append(payload(4), points=1))
    await asyncio.sleep(0.2)
    assert not blocked.done(), "a full outbox under stop-reading makes the append wait"
    assert outbox.stats().full
    (oldest,) = await outbox.peek(1)
    await outbox.ack([oldest.seq])
    assert await asyncio.wait_for(blocked, 5) == 5
    stats = outbox.stats()
    assert (stats.batches, stats.dropped_batches, stats.full) == (4, 0, False)
    assert caplog.text.count("outbox full") == 1
    assert caplog.text.count("room again") == 1
    await outbox.close()


async def test_max_age_drops_old_batches_and_counts_them(tmp_path: Path, store_kind: str) -> None:
    clock = FakeClock()
    outbox = await opened(tmp_path, store_kind, max_age_s=3600, clock=clock)
    for i in range(3):
        await outbox.append(payload(i), points=10 + i)
    clock.ns += 3601 * 10**9
    await outbox.append(payload(3), points=5)
    stats = outbox.stats()
    assert (stats.batches, stats.dropped_batches, stats.dropped_points) == (1, 3, 33)
    assert stats.oldest_age_s == 0.0
    await outbox.close()


async def test_a_batch_larger_than_the_bound_is_accepted_alone(tmp_path: Path) -> None:
    outbox = await opened(tmp_path, "segments", max_bytes=1000)
    await outbox.append(payload(0, 300), points=1)
    await outbox.append(payload(1, 5000), points=2)
    stats = outbox.stats()
    assert (stats.batches, stats.dropped_batches) == (1, 1)
    await outbox.close()


# ---------------------------------------------------------------- fail-stop
async def test_an_fsync_error_stops_the_outbox_instead_of_retrying(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    outbox = await opened(tmp_path, "segments")
    await outbox.append(payload(0), points=1)
    calls = 0

    def failing_fdatasync(fd: int) -> None:
        nonlocal calls
        calls += 1
        raise OSError(5, "Input/output error")

    from shopfloor.edge.buffer import segments

    monkeypatch.setattr(segments.os, "fdatasync", failing_fdatasync)
    with pytest.raises(OutboxFailed, match="fdatasync failed"):
        await outbox.append(payload(1), points=1)
    with pytest.raises(OutboxFailed):
        await outbox.append(payload(2), points=1)
    assert calls == 1, "no second fsync after a failed one"
    assert outbox.failed is not None
    monkeypatch.undo()
    await outbox.abandon()


async def test_none_durability_does_not_fsync_appends(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from shopfloor.edge.buffer import segments

    outbox = DurableOutbox(SegmentLog(tmp_path, durability=Durability.NONE), max_bytes=1 << 20)
    await outbox.open()
    await outbox.append(payload(0), points=1)  # the first reserves seqs (synced once)
    synced: list[int] = []
    real = segments.os.fdatasync
    monkeypatch.setattr(segments.os, "fdatasync", lambda fd: synced.append(fd) or real(fd))
    for i in range(20):
        await outbox.append(payload(i), points=1)
    assert synced == []
    monkeypatch.undo()
    await outbox.close()


async def test_concurrent_appends_share_syncs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from shopfloor.edge.buffer import segments

    outbox = await opened(tmp_path, "segments")
    await outbox.append(payload(0), points=1)
    synced: list[int] = []
    real = segments.os.fdatasync
    monkeypatch.setattr(segments.os, "fdatasync", lambda fd: synced.append(fd) or real(fd))
    seqs = await asyncio.gather(*(outbox.append(payload(i), points=1) for i in range(50)))
    assert sorted(seqs) == list(range(2, 52))
    assert 1 <= len(synced) < 50, "appends that wait together are synced together"
    monkeypatch.undo()
    await outbox.close()


async def test_a_second_process_cannot_open_the_same_outbox(tmp_path: Path) -> None:
    from shopfloor.edge.buffer import OutboxError

    outbox = await opened(tmp_path, "segments")
    other = DurableOutbox(SegmentLog(tmp_path), max_bytes=1 << 20)
    with pytest.raises(OutboxError, match="in use by another process"):
        await other.open()
    await other.close()
    await outbox.close()


async def test_after_a_reboot_page_cache_mode_skips_every_seq_it_may_have_sent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In ``none`` mode a sent batch can vanish in a power cut: its seq must not come back."""
    from shopfloor.edge.buffer import segments

    def box() -> DurableOutbox:
        return DurableOutbox(SegmentLog(tmp_path, durability=Durability.NONE), max_bytes=1 << 20)

    outbox = box()
    await outbox.open()
    assert [await outbox.append(payload(i), points=1) for i in range(3)] == [1, 2, 3]
    await outbox.abandon()

    same_boot = box()  # a process crash: the page cache survived, no gap needed
    await same_boot.open()
    assert await same_boot.append(payload(3), points=1) == 4
    await same_boot.abandon()

    monkeypatch.setattr(segments, "_boot_id", lambda: "another-boot")
    rebooted = box()
    await rebooted.open()
    seq = await rebooted.append(payload(4), points=1)
    assert seq > 4 + 1000, "numbering resumes above the synced reservation"
    await rebooted.close()
