"""What the edge asks of its outbox: append, peek, ack, stats.

The outbox sits between the sampler and the uplink. Every batch becomes durable there
before anything else happens to it, and leaves it only when the platform said the batch
is committed (``ack``) or when a bound says it must go (``drop-oldest``, maximum age).

Two layers:

* a :class:`LogStore` is the synchronous storage engine (a segment log or SQLite). It
  runs on one dedicated thread and knows nothing about policies;
* an :class:`Outbox` is the asynchronous façade the edge uses: bounded, with a named
  full-buffer policy, group commit, leases for batches in flight, and statistics.

Errors (all :class:`~shopfloor.errors.ShopfloorError`)::

    OutboxError
    ├── OutboxFailed        an fsync failed: the edge must stop (fail-stop), not retry
    ├── CorruptRecord       a record no longer matches its checksum: skipped and counted
    └── StorageUnavailable  disk full or directory unwritable: wait, it may come back
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Protocol

from shopfloor.errors import ShopfloorError

__all__ = [
    "CorruptRecord",
    "Durability",
    "FullPolicy",
    "Lane",
    "LogStore",
    "Outbox",
    "OutboxError",
    "OutboxFailed",
    "OutboxStats",
    "RecordSink",
    "Recovery",
    "StorageUnavailable",
    "StoredBatch",
]


class Durability(StrEnum):
    """When an append counts as done.

    ``fsync``: after the bytes reached the disk (survives power loss); the default.
    ``none``: after the bytes reached the page cache (survives a process crash only).
    """

    FSYNC = "fsync"
    NONE = "none"


class FullPolicy(StrEnum):
    """What happens when the outbox is full (``max_bytes``, or the disk itself).

    ``drop-oldest``: whole oldest unsent batches are dropped and counted; collection goes on.
    ``stop-reading``: appends wait for space, so the connectors' poll loops wait too.
    """

    DROP_OLDEST = "drop-oldest"
    STOP_READING = "stop-reading"


class Lane(StrEnum):
    """Which end of the outbox :meth:`Outbox.peek` takes from."""

    OLDEST = "oldest"
    NEWEST = "newest"


class OutboxError(ShopfloorError):
    """The outbox failed."""


class OutboxFailed(OutboxError):  # noqa: N818 - reads as what happened
    """Durability can no longer be promised (an fsync failed): stop the edge.

    After a failed fsync the kernel may have dropped the dirty pages and cleared the
    error, so a retry could "succeed" over lost data (the PostgreSQL fsyncgate lesson).
    The only honest reaction is to stop and let an operator or the service manager
    restart the process, which re-reads what is really on disk.
    """


class CorruptRecord(OutboxError):  # noqa: N818 - reads as what happened
    """A stored record no longer matches its checksum; it is skipped and counted."""


class StorageUnavailable(OutboxError):  # noqa: N818 - reads as what happened
    """The disk is full or the directory cannot be written; the append did not happen.

    Attributes:
        errno: the operating system's error number (ENOSPC, EACCES, EROFS …).
    """

    def __init__(self, message: str, *, errno: int | None = None) -> None:
        self.errno = errno
        super().__init__(message)


@dataclass(frozen=True, slots=True)
class StoredBatch:
    """One batch as the outbox holds it.

    Attributes:
        seq: the edge's sequence number of the batch (starts at 1, never reused).
        points: how many points the batch holds.
        appended_ns: wall-clock UTC time when the batch became durable.
        payload: the batch as an Arrow IPC stream (no wire metadata).
    """

    seq: int
    points: int
    appended_ns: int
    payload: bytes


@dataclass(slots=True)
class OutboxStats:
    """What an operator wants to know about the buffer.

    Attributes:
        batches: batches waiting for an acknowledgement (in flight included).
        points: points in those batches.
        bytes: bytes those batches take on disk (headers included).
        oldest_age_s: age of the oldest waiting batch, 0 when empty.
        max_bytes: the configured bound.
        disk_free_bytes: free space on the outbox's file system.
        hours_left: how long until full at the recent append rate (None: not appending).
        append_rate_bps: recent append rate, bytes per second.
        appended_batches: batches appended since start.
        appended_points: points appended since start.
        acked_batches: batches acknowledged since the outbox was created.
        acked_points: points acknowledged since the outbox was created.
        dropped_batches: batches dropped by a bound since the outbox was created.
        dropped_points: points dropped by a bound since the outbox was created.
        quarantined_batches: batches moved to quarantine since the outbox was created.
        corrupt_records: damaged records skipped on open since the outbox was created.
        torn_tails: torn tails truncated on open since the outbox was created.
        truncated_bytes: bytes cut off by those truncations.
        policy: the full-buffer policy.
        full: whether the outbox is full right now (stop-reading is blocking, or the
            disk is full).
        storage_error: the current storage problem, if any.
        next_seq: the sequence number the next batch gets.
    """

    batches: int = 0
    points: int = 0
    bytes: int = 0
    oldest_age_s: float = 0.0
    max_bytes: int = 0
    disk_free_bytes: int = 0
    hours_left: float | None = None
    append_rate_bps: float = 0.0
    appended_batches: int = 0
    appended_points: int = 0
    acked_batches: int = 0
    acked_points: int = 0
    dropped_batches: int = 0
    dropped_points: int = 0
    quarantined_batches: int = 0
    corrupt_records: int = 0
    torn_tails: int = 0
    truncated_bytes: int = 0
    policy: str = FullPolicy.DROP_OLDEST.value
    full: bool = False
    storage_error: str | None = None
    next_seq: int = 1


RecordSink = Callable[[int, int, int, int, int], None]
"""Receives ``(seq, loc, size, points, appended_ns)`` of each record found on open."""


@dataclass(slots=True)
class Recovery:
    """What a store found when it opened.

    Attributes:
        next_seq: the sequence number the next append gets.
        floor: every sequence number below it is acknowledged or dropped.
        done: ranges ``[first, last]`` above ``floor`` that are acknowledged or dropped.
        counters: the persisted counters (acked, dropped, quarantined …).
        corrupt_records: damaged records skipped in this open.
        torn_tails: torn tails truncated in this open.
        truncated_bytes: bytes cut off in this open.
    """

    next_seq: int = 1
    floor: int = 1
    done: list[tuple[int, int]] = field(default_factory=list)
    counters: dict[str, int] = field(default_factory=dict)
    corrupt_records: int = 0
    torn_tails: int = 0
    truncated_bytes: int = 0


class LogStore(Protocol):
    """A synchronous, single-threaded storage engine for the outbox.

    Every method is called from the outbox's one writer thread, never concurrently.
    Records are identified by ``seq``; ``loc`` is the store's own locator (an offset).
    """

    directory: Path
    """The folder that holds the store (and the outbox's id file)."""

    def open(self, sink: RecordSink) -> Recovery:
        """Open or create the store, recover from damage, report every record to ``sink``.

        Raises:
            StorageUnavailable: the directory cannot be created or written.
        """

    def append(
        self, items: Sequence[tuple[bytes, int]], *, appended_ns: int
    ) -> list[tuple[int, int, int]]:
        """Write ``(payload, points)`` items durably with one sync; return ``(seq, loc, size)``.

        Raises:
            StorageUnavailable: no space or not writable; nothing of ``items`` was kept.
            OutboxFailed: the sync failed.
        """

    def read(self, seq: int, loc: int, size: int) -> bytes:
        """Return the payload of one record.

        Raises:
            CorruptRecord: the record no longer matches its checksum.
        """

    def mark_done(self, records: Iterable[tuple[int, int]]) -> None:
        """Forget ``(seq, size)`` records (acknowledged or dropped); freed at checkpoint."""

    def checkpoint(
        self, *, floor: int, done: Sequence[tuple[int, int]], counters: Mapping[str, int]
    ) -> None:
        """Persist the acknowledgement state atomically, then free fully done storage."""

    def oldest_unit(self) -> tuple[int, int] | None:
        """The seq range ``[first, last]`` of the oldest unit of storage that can be freed.

        Under disk pressure, dropping every batch in it and checkpointing frees its space.
        """

    def disk_free(self) -> int:
        """Free bytes on the file system of the store."""

    def close(self) -> None:
        """Persist what is needed for a clean restart and release the files."""


class Outbox(Protocol):
    """The edge's durable, bounded buffer of batches waiting for the platform."""

    async def append(self, payload: bytes, *, points: int) -> int:
        """Make a batch durable and return its sequence number.

        Waits while the outbox is full under ``stop-reading`` or while the disk is full.

        Raises:
            OutboxFailed: durability can no longer be promised; stop the edge.
        """

    async def peek(
        self,
        limit: int,
        *,
        lane: Lane = Lane.OLDEST,
        before_ns: int | None = None,
        since_ns: int | None = None,
    ) -> list[StoredBatch]:
        """Lease up to ``limit`` waiting batches that are not in flight yet.

        ``lane`` picks the oldest or the newest; ``before_ns``/``since_ns`` restrict to
        batches appended before or at/after a wall-clock time. The batches stay in the
        outbox, leased, until :meth:`ack`, :meth:`release` or :meth:`quarantine`.
        """

    async def ack(self, seqs: Iterable[int]) -> None:
        """The platform committed these batches: remove them."""

    def release(self, seqs: Iterable[int]) -> None:
        """Sending failed: make these batches available to :meth:`peek` again."""

    def stats(self) -> OutboxStats:
        """Return the current figures; cheap."""
