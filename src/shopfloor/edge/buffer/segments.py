"""The outbox as an append-only segment log: the default store.

Layout of the outbox directory::

    LOCK                          flock'd while an edge process owns the outbox
    state                         two 32 KiB slots, written in place in turn
    00000000000000000001.seg      records with seq 1 … (the name is the first seq)
    00000000000000004711.seg      …

A record is a 36-byte header and the payload::

    magic u32 | length u32 | crc32 u32 | seq u64 | appended_ns i64 | points u32 | flags u32
    payload (length bytes)

little-endian; the CRC (zlib's CRC-32) covers everything after itself, header and payload.

Why it survives what it must:

* **Torn tail** (power cut or SIGKILL mid-write): on open the last segment is scanned;
  a record that is incomplete or fails its CRC with no valid record after it is a torn
  tail: the file is truncated there and the damage counted. Everything before survives.
* **Damage in the middle** (a bit flip, a bad sector): the record fails its CRC but a
  valid record follows (found by searching for the magic number and checking the CRC):
  the bad bytes are skipped and counted. Never a crash loop.
* **Acknowledgements** are kept in the ``state`` file: a floor (every seq below it is
  done) and the done ranges above it, with the counters. The file holds two fixed slots
  with a generation number and a CRC, written alternately in place: an interrupted write
  leaves the other slot intact, and writing in place needs no free blocks, so the state
  can still be saved (and segments deleted) on a full disk.
* **Sequence numbers** are never reused. Each checkpoint saves the next seq before any
  segment is deleted, and records reach the sender only once durable, so in ``fsync``
  mode numbering simply continues after the highest seq on disk or in the state.
  In ``none`` mode a batch may reach the platform from the page cache and then vanish
  in a power cut; its seq must not go to a different batch (the platform's ledger
  would drop that one as a duplicate). So in ``none`` mode a reserved high-water mark
  (1024 ahead) is synced before seqs beyond it are used, with the boot id; after a
  reboot numbering resumes above the mark. A process crash keeps the page cache, so
  the same boot resumes without a gap, and so does every clean restart.
* **fsync failure** marks the log failed and raises :class:`OutboxFailed`: no retry.
"""

from __future__ import annotations

import bisect
import contextlib
import errno
import fcntl
import json
import logging
import os
import struct
import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shopfloor.edge.buffer.base import (
    CorruptRecord,
    Durability,
    OutboxError,
    OutboxFailed,
    RecordSink,
    Recovery,
    StorageUnavailable,
)

__all__ = ["HEADER_SIZE", "MAGIC", "SegmentLog"]

logger = logging.getLogger(__name__)

MAGIC = 0x424F4653  # b"SFOB" read as little-endian u32
_HEADER = struct.Struct("<IIIqqII")
HEADER_SIZE = _HEADER.size
"""Bytes of every record's header."""

_STATE_MAGIC = 0x54534653  # b"SFST"
_SLOT_HEADER = struct.Struct("<IQII")  # magic, generation, length, crc
_SLOT_BYTES = 32 * 1024
_RESERVE = 1024
_SUFFIX = ".seg"
_MAX_PAYLOAD = 1 << 30

_UNAVAILABLE = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM}
"""Errors that may go away by themselves (space freed, remounted): wait, don't fail."""


@dataclass(slots=True)
class _Segment:
    start: int
    path: Path
    size: int = 0
    live: int = 0
    last_seq: int = 0
    records: int = 0


def _unavailable(what: str, err: OSError) -> StorageUnavailable:
    return StorageUnavailable(f"{what}: {err.strerror or err}", errno=err.errno)


class SegmentLog:
    """A :class:`~shopfloor.edge.buffer.base.LogStore` on append-only segment files.

    Args:
        directory: the outbox directory (created if missing).
        durability: ``fsync`` syncs every append before it counts; ``none`` does not.
        segment_bytes: a segment is closed once it holds this much (a single larger
            record still fits in a segment of its own).
    """

    record_overhead = HEADER_SIZE

    def __init__(
        self,
        directory: Path,
        *,
        durability: Durability = Durability.FSYNC,
        segment_bytes: int = 8 * 1024 * 1024,
    ) -> None:
        self.directory = Path(directory)
        self.durability = durability
        self.segment_bytes = segment_bytes
        self._segments: list[_Segment] = []
        self._starts: list[int] = []
        self._fd: int | None = None  # the active (last) segment, open for appending
        self._readers: dict[int, int] = {}
        self._lock_fd: int | None = None
        self._state_fd: int | None = None
        self._generation = 0
        self._next_seq = 1
        self._reserved = 0
        self._saved: dict[str, Any] = {"floor": 1, "done": [], "counters": {}}
        self._failed: OutboxFailed | None = None
        self._reclaim_active = False

    # ------------------------------------------------------------------ open
    def open(self, sink: RecordSink) -> Recovery:
        """Lock the directory, load the state, scan the segments and repair damage."""
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            self._lock()
            state = self._open_state()
        except OSError as err:
            self._release_files()
            raise _unavailable(f"cannot use outbox directory {self.directory}", err) from err
        floor = int(state.get("floor", 1))
        done = [(int(a), int(b)) for a, b in state.get("done", [])]
        counters = {str(k): int(v) for k, v in dict(state.get("counters", {})).items()}
        rebooted = state.get("boot_id") not in (None, _boot_id())
        self._reserved = int(state.get("reserved", 0)) if rebooted else 0
        saved_next = int(state.get("next_seq", 1))
        recovery = Recovery(floor=floor, done=done, counters=counters)
        try:
            max_seq = self._scan(sink, floor=floor, done=done, recovery=recovery)
        except OSError as err:
            self._release_files()
            raise _unavailable(f"cannot read outbox {self.directory}", err) from err
        high = max([max_seq, self._reserved, saved_next - 1, floor - 1, *(b for _, b in done)])
        self._next_seq = high + 1
        recovery.next_seq = self._next_seq
        self._saved = {"floor": floor, "done": done, "counters": counters}
        if recovery.corrupt_records or recovery.torn_tails:
            for key in ("corrupt_records", "torn_tails", "truncated_bytes"):
                counters[key] = counters.get(key, 0) + getattr(recovery, key)
            self._write_state(sync=True)
        return recovery

    def _lock(self) -> None:
        fd = os.open(self.directory / "LOCK", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as err:
            os.close(fd)
            raise OutboxError(
                f"outbox {self.directory} is in use by another process (stop the other edge)"
            ) from err
        self._lock_fd = fd

    def _open_state(self) -> dict[str, Any]:
        path = self.directory / "state"
        created = not path.exists()
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        self._state_fd = fd
        if created or os.fstat(fd).st_size < 2 * _SLOT_BYTES:
            # Allocate both slots now: later writes happen in place, even on a full disk.
            os.ftruncate(fd, 0)
            os.pwrite(fd, b"\0" * (2 * _SLOT_BYTES), 0)
            os.fsync(fd)
            self._sync_dir()
            return {}
        best: tuple[int, dict[str, Any]] | None = None
        for slot in (0, 1):
            raw = os.pread(fd, _SLOT_BYTES, slot * _SLOT_BYTES)
            magic, generation, length, crc = _SLOT_HEADER.unpack_from(raw)
            body = raw[_SLOT_HEADER.size : _SLOT_HEADER.size + length]
            if magic != _STATE_MAGIC or len(body) != length or zlib.crc32(body) != crc:
                continue
            try:
                doc = json.loads(body)
            except ValueError:
                continue
            if best is None or generation > best[0]:
                best = (generation, doc)
        if best is None:
            logger.error("outbox state %s is unreadable: treating every record as unsent", path)
            return {}
        self._generation = best[0]
        return best[1]

    def _scan(
        self, sink: RecordSink, *, floor: int, done: list[tuple[int, int]], recovery: Recovery
    ) -> int:
        names = sorted(p for p in self.directory.iterdir() if p.name.endswith(_SUFFIX))
        done_firsts = [a for a, _ in done]

        def is_done(seq: int) -> bool:
            return _is_done(seq, floor, done, done_firsts)

        max_seq = 0
        for number, path in enumerate(names):
            if not path.name[: -len(_SUFFIX)].isdigit():
                continue
            seg = _Segment(start=int(path.name[: -len(_SUFFIX)]), path=path)
            last = number == len(names) - 1
            max_seq = self._scan_segment(
                seg, sink, is_done, after=max_seq, last=last, recovery=recovery
            )
            if seg.records == 0:  # nothing valid in it (junk, or a wholly torn file)
                path.unlink()
                continue
            self._segments.append(seg)
            self._starts.append(seg.start)
        if self._segments and names and self._segments[-1].path == names[-1]:
            active = self._segments[-1]
            if active.size < self.segment_bytes:
                self._fd = os.open(active.path, os.O_WRONLY | os.O_APPEND)
        self._delete_done_segments()
        return max_seq

    def _scan_segment(
        self,
        seg: _Segment,
        sink: RecordSink,
        is_done: Callable[[int], bool],
        *,
        after: int,
        last: bool,
        recovery: Recovery,
    ) -> int:
        """Index one segment's valid records (seqs above ``after``); return the highest seq."""
        data = seg.path.read_bytes()
        max_seq = after
        pos = 0
        while pos < len(data):
            parsed = _parse(data, pos)
            if parsed is not None and parsed[0] > max_seq:
                seq, appended_ns, points, end = parsed
                max_seq = seq
                if seg.records == 0:  # trust the content, not the file name
                    seg.start = seq
                seg.records += 1
                seg.last_seq = seq
                if not is_done(seq):
                    seg.live += 1
                    sink(seq, pos, end - pos, points, appended_ns)
                pos = end
                continue
            resume = _resync(data, pos + 1, max_seq)
            if resume is None and last:
                cut = len(data) - pos
                logger.warning(
                    "outbox %s: torn tail of %d bytes at offset %d truncated",
                    seg.path.name,
                    cut,
                    pos,
                )
                recovery.torn_tails += 1
                recovery.truncated_bytes += cut
                with seg.path.open("r+b") as handle:
                    handle.truncate(pos)
                    os.fsync(handle.fileno())
                data = data[:pos]
                break
            skipped = (resume or len(data)) - pos
            logger.warning(
                "outbox %s: %d damaged bytes at offset %d skipped", seg.path.name, skipped, pos
            )
            recovery.corrupt_records += 1
            pos = resume if resume is not None else len(data)
        seg.size = len(data)
        return max_seq

    # ---------------------------------------------------------------- append
    def append(
        self, items: Sequence[tuple[bytes, int]], *, appended_ns: int
    ) -> list[tuple[int, int, int]]:
        """Write ``(payload, points)`` records after each other and sync once."""
        if self._failed is not None:
            raise self._failed
        if not items:
            return []
        total = sum(HEADER_SIZE + len(p) for p, _ in items)
        if any(len(p) > _MAX_PAYLOAD for p, _ in items):
            raise ValueError("a batch over 1 GiB does not belong in one record")
        first = self._next_seq
        last = first + len(items) - 1
        if self.durability is Durability.NONE and last > self._reserved:
            self._write_state(sync=True, reserved=last + _RESERVE)
        active = self._active(total)
        fd = self._fd
        assert fd is not None
        offset = active.size
        buf = bytearray()
        out: list[tuple[int, int, int]] = []
        for i, (payload, points) in enumerate(items):
            seq = first + i
            head = _HEADER.pack(MAGIC, len(payload), 0, seq, appended_ns, points, 0)
            crc = zlib.crc32(payload, zlib.crc32(head[12:]))
            out.append((seq, offset + len(buf), HEADER_SIZE + len(payload)))
            buf += head[:8] + struct.pack("<I", crc) + head[12:]
            buf += payload
        try:
            _write_all(fd, buf)
        except OSError as err:
            self._undo(fd, offset)
            if err.errno in _UNAVAILABLE:
                raise _unavailable("cannot write to the outbox", err) from err
            raise self._fail("write", err) from err
        if self.durability is Durability.FSYNC:
            try:
                os.fdatasync(fd)
            except OSError as err:
                raise self._fail("fdatasync", err) from err
        active.size = offset + len(buf)
        active.records += len(items)
        active.live += len(items)
        active.last_seq = last
        self._next_seq = last + 1
        return out

    def _active(self, incoming: int) -> _Segment:
        """The segment to append to, rolling over to a new one when the current one is full."""
        if self._segments and self._fd is not None:
            current = self._segments[-1]
            if current.records == 0 or current.size + incoming <= self.segment_bytes:
                return current
            os.close(self._fd)
            self._fd = None
        path = self.directory / f"{self._next_seq:020d}{_SUFFIX}"
        try:
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:  # left empty by an earlier failed append: reuse it
            fd = os.open(path, os.O_WRONLY | os.O_APPEND)
            os.ftruncate(fd, 0)
            self._drop_segment_entry(self._next_seq)
        except OSError as err:
            if err.errno in _UNAVAILABLE:
                raise _unavailable("cannot create an outbox segment", err) from err
            raise self._fail("create", err) from err
        if self.durability is Durability.FSYNC:
            try:
                self._sync_dir()
            except OSError as err:
                os.close(fd)
                raise self._fail("fsync of the directory", err) from err
        self._fd = fd
        seg = _Segment(start=self._next_seq, path=path)
        self._segments.append(seg)
        self._starts.append(seg.start)
        return seg

    def _drop_segment_entry(self, start: int) -> None:
        i = bisect.bisect_left(self._starts, start)
        if i < len(self._starts) and self._starts[i] == start:
            del self._starts[i]
            del self._segments[i]

    def _undo(self, fd: int, offset: int) -> None:
        try:
            os.ftruncate(fd, offset)
        except OSError as err:  # nothing more to do: the next open cuts the torn tail
            logger.warning("outbox: cannot cut back a failed append: %s", err)

    def _fail(self, what: str, err: OSError) -> OutboxFailed:
        self._failed = OutboxFailed(
            f"outbox {self.directory}: {what} failed ({err.strerror or err}); "
            "durability can no longer be promised, stopping"
        )
        return self._failed

    # ------------------------------------------------------------------ read
    def read(self, seq: int, loc: int, size: int) -> bytes:
        """Return one record's payload, checking its CRC again (disks rot)."""
        seg = self._segment_of(seq)
        if seg is None:
            raise CorruptRecord(f"record {seq} is not in any segment")
        fd = self._readers.get(seg.start)
        if fd is None:
            fd = os.open(seg.path, os.O_RDONLY)
            self._readers[seg.start] = fd
        data = os.pread(fd, size, loc)
        parsed = _parse(data, 0)
        if parsed is None or parsed[0] != seq:
            raise CorruptRecord(f"record {seq} at {seg.path.name}:{loc} fails its checksum")
        return data[HEADER_SIZE:]

    def _segment_of(self, seq: int) -> _Segment | None:
        i = bisect.bisect_right(self._starts, seq) - 1
        return self._segments[i] if i >= 0 else None

    # ------------------------------------------------------------ done, state
    def mark_done(self, records: Iterable[tuple[int, int]]) -> None:
        """Count records as done; their segment goes once all of its records are done."""
        for seq, _size in records:
            seg = self._segment_of(seq)
            if seg is not None and seg.live > 0:
                seg.live -= 1

    def checkpoint(
        self, *, floor: int, done: Sequence[tuple[int, int]], counters: Mapping[str, int]
    ) -> None:
        """Save the state (synced in ``fsync`` mode), then delete segments with nothing left."""
        self._saved = {"floor": floor, "done": [list(r) for r in done], "counters": dict(counters)}
        self._write_state(sync=self.durability is Durability.FSYNC)
        self._delete_done_segments()

    def _write_state(self, *, sync: bool, reserved: int | None = None) -> None:
        """Write the state into the older slot; the reserved mark counts only once written."""
        fd = self._state_fd
        if fd is None:
            return
        mark = self._reserved if reserved is None else reserved
        doc = {**self._saved, "reserved": mark, "next_seq": self._next_seq, "boot_id": _boot_id()}
        body = json.dumps(doc, separators=(",", ":")).encode()
        room = _SLOT_BYTES - _SLOT_HEADER.size
        while len(body) > room and doc["done"]:
            # Keep the oldest ranges: the newest ones, if lost in a crash, only mean
            # re-sending batches the platform's ledger already has.
            doc["done"] = doc["done"][: len(doc["done"]) // 2]
            body = json.dumps(doc, separators=(",", ":")).encode()
        self._generation += 1
        slot = self._generation % 2
        head = _SLOT_HEADER.pack(_STATE_MAGIC, self._generation, len(body), zlib.crc32(body))
        try:
            os.pwrite(fd, head + body, slot * _SLOT_BYTES)
        except OSError as err:
            self._generation -= 1
            if err.errno in _UNAVAILABLE:
                raise _unavailable("cannot save the outbox state", err) from err
            raise self._fail("state write", err) from err
        if sync:
            try:
                os.fdatasync(fd)
            except OSError as err:
                raise self._fail("fdatasync of the state", err) from err
        self._reserved = mark

    def _delete_done_segments(self) -> None:
        keep: list[_Segment] = []
        for i, seg in enumerate(self._segments):
            is_active = i == len(self._segments) - 1 and self._fd is not None
            if seg.live > 0 or (is_active and not self._reclaim_active):
                keep.append(seg)
                continue
            if is_active:
                assert self._fd is not None
                os.close(self._fd)
                self._fd = None
            reader = self._readers.pop(seg.start, None)
            if reader is not None:
                os.close(reader)
            with contextlib.suppress(FileNotFoundError):
                seg.path.unlink()
        self._reclaim_active = False
        self._segments = keep
        self._starts = [s.start for s in keep]

    def oldest_unit(self) -> tuple[int, int] | None:
        """The seq range of the oldest segment still holding unsent records."""
        for i, seg in enumerate(self._segments):
            if seg.live > 0:
                if i == len(self._segments) - 1:
                    self._reclaim_active = True
                return (seg.start, max(seg.last_seq, seg.start))
        return None

    def disk_free(self) -> int:
        """Free bytes for unprivileged writers on the outbox's file system."""
        try:
            st = os.statvfs(self.directory)
        except OSError:
            return 0
        return st.f_bavail * st.f_frsize

    def disk_bytes(self) -> int:
        """Bytes the segments take (done records of live segments included)."""
        return sum(s.size for s in self._segments)

    def close(self) -> None:
        """Write the exact sequence mark (a clean restart leaves no gap) and release files."""
        if self._failed is None and self._state_fd is not None:
            try:
                self._write_state(sync=True, reserved=self._next_seq - 1)
            except (OutboxError, OSError) as err:
                logger.warning("outbox: cannot save the state on close: %s", err)
        self._release_files()

    def abandon(self) -> None:
        """Release the files without saving anything, as a killed process would (tests)."""
        self._release_files()

    def _release_files(self) -> None:
        for fd in [self._fd, self._state_fd, *self._readers.values()]:
            if fd is not None:
                os.close(fd)
        self._fd = None
        self._state_fd = None
        self._readers.clear()
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing releases the flock
            self._lock_fd = None

    def _sync_dir(self) -> None:
        fd = os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


_BOOT_ID: list[str] = []


def _boot_id() -> str:
    """This boot's id (Linux); a change means the page cache was lost since."""
    if not _BOOT_ID:
        try:
            _BOOT_ID.append(Path("/proc/sys/kernel/random/boot_id").read_text().strip())
        except OSError:
            _BOOT_ID.append("unknown")
    return _BOOT_ID[0]


def _write_all(fd: int, data: bytes | bytearray) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _parse(data: bytes, pos: int) -> tuple[int, int, int, int] | None:
    """Return ``(seq, appended_ns, points, end)`` of a valid record at ``pos``, else None."""
    if len(data) - pos < HEADER_SIZE:
        return None
    magic, length, crc, seq, appended_ns, points, _flags = _HEADER.unpack_from(data, pos)
    end = pos + HEADER_SIZE + length
    if magic != MAGIC or length > _MAX_PAYLOAD or end > len(data) or seq < 1:
        return None
    if zlib.crc32(memoryview(data)[pos + 12 : end]) != crc:
        return None
    return seq, appended_ns, points, end


def _resync(data: bytes, start: int, after_seq: int) -> int | None:
    """Find the next valid record at or after ``start`` whose seq follows ``after_seq``."""
    needle = struct.pack("<I", MAGIC)
    pos = data.find(needle, start)
    while pos != -1:
        parsed = _parse(data, pos)
        if parsed is not None and parsed[0] > after_seq:
            return pos
        pos = data.find(needle, pos + 1)
    return None


def _is_done(seq: int, floor: int, done: list[tuple[int, int]], firsts: list[int]) -> bool:
    if seq < floor:
        return True
    i = bisect.bisect_right(firsts, seq) - 1
    return i >= 0 and done[i][0] <= seq <= done[i][1]
