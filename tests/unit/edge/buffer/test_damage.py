"""Damaged outbox files: the rest survives, the damage is counted, nothing crash-loops."""

from __future__ import annotations

import os
import struct
from pathlib import Path

import pytest

from shopfloor.edge.buffer import DurableOutbox, SegmentLog, SqliteLog
from shopfloor.edge.buffer.segments import HEADER_SIZE, MAGIC

PAYLOAD = 300


def payload(i: int) -> bytes:
    return (f"<{i}>".encode() * PAYLOAD)[:PAYLOAD]


async def fill(directory: Path, n: int, *, segment_bytes: int = 1 << 20) -> None:
    outbox = DurableOutbox(SegmentLog(directory, segment_bytes=segment_bytes), max_bytes=1 << 30)
    await outbox.open()
    for i in range(n):
        await outbox.append(payload(i), points=i + 1)
    await outbox.close()


async def reopen(directory: Path) -> tuple[DurableOutbox, list[int]]:
    outbox = DurableOutbox(SegmentLog(directory), max_bytes=1 << 30)
    await outbox.open()
    waiting = await outbox.peek(10_000)
    for b in waiting:
        assert b.payload == payload(b.seq - 1), "every surviving batch is intact"
    outbox.release(b.seq for b in waiting)
    return outbox, [b.seq for b in waiting]


def segments(directory: Path) -> list[Path]:
    return sorted(directory.glob("*.seg"))


def record_offset(k: int) -> int:
    """Where the k-th record (0-based) of a segment starts: all records are the same size."""
    return k * (HEADER_SIZE + PAYLOAD)


async def test_a_torn_tail_is_truncated_counted_and_the_rest_survives(tmp_path: Path) -> None:
    await fill(tmp_path, 10)
    (seg,) = segments(tmp_path)
    assert seg.stat().st_size == 10 * (HEADER_SIZE + PAYLOAD)
    # the last record was cut half-way by a power cut, then junk landed after it
    last = record_offset(9)
    with seg.open("r+b") as handle:
        handle.truncate(last + HEADER_SIZE + PAYLOAD // 2)
        handle.seek(0, os.SEEK_END)
        handle.write(os.urandom(123))
    damaged_size = seg.stat().st_size

    outbox, seqs = await reopen(tmp_path)
    assert seqs == list(range(1, 10))
    stats = outbox.stats()
    assert stats.torn_tails == 1
    assert stats.truncated_bytes == damaged_size - last
    assert seg.stat().st_size == last, "the file is cut back to the last good record"
    assert await outbox.append(payload(10), points=1) == 11, "the torn seq 10 is not reused"
    await outbox.close()

    again, seqs = await reopen(tmp_path)
    assert seqs == [*range(1, 10), 11]
    assert again.stats().torn_tails == 1, "counted once, and the count persists"
    await again.close()


async def test_a_bit_flip_in_the_middle_is_skipped_and_counted(tmp_path: Path) -> None:
    await fill(tmp_path, 10)
    (seg,) = segments(tmp_path)
    with seg.open("r+b") as handle:
        handle.seek(record_offset(4) + HEADER_SIZE + 17)  # inside batch 5's payload
        byte = handle.read(1)
        handle.seek(-1, os.SEEK_CUR)
        handle.write(bytes([byte[0] ^ 0x10]))

    outbox, seqs = await reopen(tmp_path)
    assert seqs == [1, 2, 3, 4, 6, 7, 8, 9, 10]
    stats = outbox.stats()
    assert (stats.corrupt_records, stats.torn_tails) == (1, 0)
    assert stats.points == sum(range(1, 11)) - 5
    await outbox.close()


async def test_a_flipped_length_field_loses_only_that_record(tmp_path: Path) -> None:
    await fill(tmp_path, 10)
    (seg,) = segments(tmp_path)
    with seg.open("r+b") as handle:
        handle.seek(record_offset(2) + 4)  # batch 3's length: now points far past the end
        handle.write(struct.pack("<I", 0x00FFFFFF))

    outbox, seqs = await reopen(tmp_path)
    assert seqs == [1, 2, 4, 5, 6, 7, 8, 9, 10]
    assert outbox.stats().corrupt_records == 1
    await outbox.close()


async def test_damage_in_an_older_segment_does_not_touch_the_newer_ones(tmp_path: Path) -> None:
    await fill(tmp_path, 12, segment_bytes=4 * (HEADER_SIZE + PAYLOAD))
    first, *rest = segments(tmp_path)
    assert len(rest) == 2
    with first.open("r+b") as handle:  # the last record of a closed segment is cut
        handle.truncate(record_offset(3) + 10)

    outbox, seqs = await reopen(tmp_path)
    assert seqs == [1, 2, 3, *range(5, 13)]
    stats = outbox.stats()
    assert (stats.corrupt_records, stats.torn_tails) == (1, 0)
    await outbox.close()


async def test_garbage_files_and_a_wiped_state_do_not_crash_the_open(tmp_path: Path) -> None:
    await fill(tmp_path, 5)
    (tmp_path / "state").write_bytes(os.urandom(70_000))
    (tmp_path / "00000000000000000003.seg").write_bytes(struct.pack("<I", MAGIC) + os.urandom(50))
    outbox, seqs = await reopen(tmp_path)
    # without acknowledgement state every batch counts as unsent: resent, never lost
    assert seqs == [1, 2, 3, 4, 5]
    assert await outbox.append(payload(0), points=1) == 6
    await outbox.close()


async def test_a_record_that_rots_after_open_is_skipped_when_read(tmp_path: Path) -> None:
    await fill(tmp_path, 3)
    outbox = DurableOutbox(SegmentLog(tmp_path), max_bytes=1 << 30)
    await outbox.open()
    (seg,) = segments(tmp_path)
    with seg.open("r+b") as handle:
        handle.seek(record_offset(1) + HEADER_SIZE + 5)
        handle.write(b"\xff\xff")
    waiting = await outbox.peek(10)
    assert [b.seq for b in waiting] == [1, 3]
    stats = outbox.stats()
    assert (stats.corrupt_records, stats.batches) == (1, 2)
    await outbox.close()


async def test_a_corrupt_sqlite_outbox_is_moved_aside_and_counted(tmp_path: Path) -> None:
    outbox = DurableOutbox(SqliteLog(tmp_path), max_bytes=1 << 30)
    await outbox.open()
    for i in range(3):
        await outbox.append(payload(i), points=1)
    await outbox.close()
    db = tmp_path / "outbox.sqlite"
    data = bytearray(db.read_bytes())
    data[0:16] = b"definitely junk!"
    db.write_bytes(bytes(data))

    again = DurableOutbox(SqliteLog(tmp_path), max_bytes=1 << 30)
    await again.open()
    assert again.stats().corrupt_records == 1
    assert await again.append(payload(0), points=1) == 1
    aside = [n for n in os.listdir(tmp_path) if n.startswith("outbox.sqlite.corrupt-")]
    assert aside, "the damaged file is kept aside"
    await again.close()


@pytest.mark.parametrize("cut", [1, HEADER_SIZE - 1, HEADER_SIZE + 1])
async def test_any_cut_of_the_last_record_recovers_the_rest(tmp_path: Path, cut: int) -> None:
    await fill(tmp_path, 4)
    (seg,) = segments(tmp_path)
    with seg.open("r+b") as handle:
        handle.truncate(record_offset(3) + cut)
    outbox, seqs = await reopen(tmp_path)
    assert seqs == [1, 2, 3]
    assert outbox.stats().truncated_bytes == cut
    await outbox.close()
