"""The edge's outbox: a bounded, durable buffer with a named full-buffer policy.

:class:`DurableOutbox` is the asynchronous façade over a synchronous
:class:`~shopfloor.edge.buffer.base.LogStore` (the segment log or SQLite). All storage
work runs on one writer thread, so the event loop never waits on a disk (house rule 4).

* **Group commit.** Appends that arrive while a write is running are written together
  with one sync, so eight poll loops cost one fsync, not eight.
* **Bounds.** ``max_bytes`` counts the records still waiting (headers included);
  ``max_age_s`` drops batches older than that. When an append would go over
  ``max_bytes``, the policy decides: ``drop-oldest`` drops whole oldest waiting batches
  (never one in flight) until it fits, counting batches and points exactly;
  ``stop-reading`` makes the append wait until acknowledgements make room, so the
  connectors' poll loops wait too. A batch larger than ``max_bytes`` on its own is
  accepted once the outbox is otherwise empty. Each transition is logged once.
* **Full or unwritable disk.** The append is retried until it succeeds: under
  ``drop-oldest`` the oldest segment's waiting batches are dropped (counted) so its
  space is freed; under ``stop-reading`` the append waits. The error is logged once and
  the recovery once.
* **Leases.** :meth:`peek` hands batches to the sender and marks them in flight; they
  stay on disk until :meth:`ack`. A crash loses only the leases: the batches are sent
  again, which the platform's ledger makes harmless.
* **Checkpoints.** Acknowledgements are saved at most every ``checkpoint_interval_s``
  (a lost acknowledgement means one harmless re-send); drops are saved before the space
  they free is reused.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import time
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from shopfloor.edge.buffer.base import (
    CorruptRecord,
    FullPolicy,
    Lane,
    LogStore,
    OutboxError,
    OutboxFailed,
    OutboxStats,
    StorageUnavailable,
    StoredBatch,
)
from shopfloor.edge.buffer.identity import is_fresh, load_or_create_id
from shopfloor.edge.buffer.index import DONE, LEASED, WAITING, Index
from shopfloor.errors import ShutdownError
from shopfloor.runtime.backoff import Backoff
from shopfloor.runtime.clock import Clock, SystemClock

__all__ = ["DurableOutbox"]

logger = logging.getLogger(__name__)

T = TypeVar("T")

_COUNTERS = (
    "acked_batches",
    "acked_points",
    "dropped_batches",
    "dropped_points",
    "quarantined_batches",
    "quarantined_points",
    "corrupt_records",
    "torn_tails",
    "truncated_bytes",
)
_RATE_WINDOW_S = 60.0
_NO_SPACE = {errno.ENOSPC, errno.EDQUOT}


class DurableOutbox:
    """A bounded, durable :class:`~shopfloor.edge.buffer.base.Outbox` over a log store.

    Args:
        store: the storage engine (:class:`~shopfloor.edge.buffer.segments.SegmentLog`
            or :class:`~shopfloor.edge.buffer.sqlite.SqliteLog`).
        max_bytes: the most bytes of waiting batches.
        max_age_s: drop waiting batches older than this (None: keep them however old).
        policy: what to do when full.
        checkpoint_interval_s: how often acknowledgements are saved.
        clock: injected so tests can move wall-clock time.
        retry: first and longest wait between attempts on a full or unwritable disk.
    """

    def __init__(
        self,
        store: LogStore,
        *,
        max_bytes: int,
        max_age_s: float | None = None,
        policy: FullPolicy = FullPolicy.DROP_OLDEST,
        checkpoint_interval_s: float = 1.0,
        clock: Clock | None = None,
        retry: tuple[float, float] = (0.2, 5.0),
    ) -> None:
        self.store = store
        self.max_bytes = max_bytes
        self.max_age_s = max_age_s
        self.policy = FullPolicy(policy)
        self._checkpoint_interval_s = checkpoint_interval_s
        self._clock = clock or SystemClock()
        self._retry = retry
        self._overhead = int(getattr(store, "record_overhead", 0))
        self._executor: ThreadPoolExecutor | None = None
        self._index = Index()
        self.outbox_id = ""
        """Sent with every batch (see :mod:`.identity`); "" for an outbox from before ids."""
        self._counters = dict.fromkeys(_COUNTERS, 0)
        self._next_seq = 1
        self._count = 0
        self._points = 0
        self._bytes = 0
        self._reserved = 0  # bytes of appends admitted but not written yet
        self._appended_batches = 0
        self._appended_points = 0
        self._rate: deque[tuple[float, int]] = deque(maxlen=4096)
        self._pending: list[tuple[bytes, int, asyncio.Future[int]]] = []
        self._write_lock = asyncio.Lock()
        self._reclaim_lock = asyncio.Lock()
        self._reclaims = 0
        self._room_event = asyncio.Event()
        self._available = asyncio.Event()
        self._dirty = False
        self._last_checkpoint = 0.0
        self._full = False
        self._disk_full_at: int | None = None
        self._storage_error: str | None = None
        self._failed: OutboxFailed | None = None
        self._opened = False
        self._closed = False
        self._listeners: list[Callable[[], None]] = []

    # ------------------------------------------------------------- lifecycle
    async def open(self) -> None:
        """Open the store, recovering from damage; counts what was repaired.

        Raises:
            StorageUnavailable: the directory cannot be used (try again later).
            OutboxError: another process owns the outbox.
        """
        if self._opened:
            return
        self._index = Index()
        directory = Path(self.store.directory)
        fresh = await self._run(is_fresh, directory)
        recovery = await self._run(self.store.open, self._index.add)
        try:
            self.outbox_id = await self._run(load_or_create_id, directory, fresh=fresh)
        except OSError as err:
            await self._run(self.store.close)
            raise StorageUnavailable(
                f"cannot write the outbox id in {directory}: {err.strerror}", errno=err.errno
            ) from err
        for key, value in recovery.counters.items():
            if key in self._counters:
                self._counters[key] = value
        self._next_seq = recovery.next_seq
        idx = self._index
        self._count = len(idx)
        self._points = sum(idx.points)
        self._bytes = sum(idx.size)
        self._opened = True
        if self._count:
            self._signal()
        if recovery.corrupt_records or recovery.torn_tails:
            logger.warning(
                "outbox opened after damage: %d corrupt record(s) skipped, %d torn tail(s) "
                "truncated (%d bytes); %d batches waiting",
                recovery.corrupt_records,
                recovery.torn_tails,
                recovery.truncated_bytes,
                self._count,
            )
        elif self._count:
            logger.info("outbox opened: %d batches (%d points) waiting", self._count, self._points)

    async def close(self) -> None:
        """Save the acknowledgement state and release the files. Idempotent."""
        if self._closed:
            return
        self._closed = True
        try:
            if self._opened:
                async with self._write_lock:
                    if self._failed is None:
                        try:
                            await self._checkpoint()
                        except OutboxError as err:
                            logger.warning("outbox: final checkpoint failed: %s", err)
                    await self._run(self.store.close)  # after a failure: releases files only
        finally:
            if self._executor is not None:
                self._executor.shutdown(wait=True)
                self._executor = None

    async def abandon(self) -> None:
        """Stop without saving anything, as a killed process would (for crash tests)."""
        self._closed = True
        abandon = getattr(self.store, "abandon", None)
        if abandon is not None and self._opened:
            await self._run_anyway(abandon)
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None

    async def _run_anyway(self, fn: Callable[[], None]) -> None:
        if self._executor is None:
            fn()
            return
        await asyncio.get_running_loop().run_in_executor(self._executor, fn)

    @property
    def failed(self) -> OutboxFailed | None:
        """The fail-stop error, once durability can no longer be promised."""
        return self._failed

    def add_listener(self, listener: Callable[[], None]) -> None:
        """Call ``listener`` (on the event loop) when batches become available or on failure."""
        self._listeners.append(listener)

    def _signal(self) -> None:
        self._available.set()
        for listener in self._listeners:
            listener()

    async def run_io(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run blocking file work (the quarantine's) on the outbox's writer thread."""
        return await self._run(fn, *args, **kwargs)

    async def _run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        if self._executor is None:
            if self._closed:
                raise ShutdownError("the outbox is closed")
            self._executor = ThreadPoolExecutor(1, thread_name_prefix="outbox-writer")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, lambda: fn(*args, **kwargs))

    # ---------------------------------------------------------------- append
    async def append(self, payload: bytes, *, points: int) -> int:
        """Make ``payload`` durable and return its sequence number.

        Waits while full under ``stop-reading`` and while the disk is full or unwritable.

        Raises:
            OutboxFailed: an fsync failed; stop the edge.
            ShutdownError: the outbox is closed.
        """
        self._check_usable()
        size = len(payload) + self._overhead
        await self._expire()
        await self._admit(size)
        self._reserved += size
        backoff = Backoff(initial=self._retry[0], maximum=self._retry[1])
        try:
            while True:
                self._check_usable()
                reclaims = self._reclaims
                try:
                    seq = await self._commit(payload, points)
                except StorageUnavailable as err:
                    disk_full = err.errno in _NO_SPACE
                    if (
                        disk_full
                        and self.policy is FullPolicy.DROP_OLDEST
                        and await self._reclaim(reclaims)
                    ):
                        self._set_disk_full(True)  # the policy handles it: not an error
                        continue
                    self._storage_down(err)
                    await self._wait_for_space(backoff.next_delay())
                    continue
                self._storage_up()
                return seq
        finally:
            self._reserved -= size

    def _check_usable(self) -> None:
        if self._failed is not None:
            raise self._failed
        if self._closed or not self._opened:
            raise ShutdownError("the outbox is closed" if self._closed else "outbox not open")

    async def _admit(self, size: int) -> None:
        """Apply the full-buffer policy before an append of ``size`` bytes."""
        while not self._fits(size):
            self._set_full(True)
            if self.policy is FullPolicy.DROP_OLDEST:
                dropped = self._drop(lambda: not self._fits(size))
                if dropped:
                    await self._forget(dropped)
                    continue
            # stop-reading, or every droppable batch is in flight: wait for an answer
            await self._wait_room()
            self._check_usable()
        self._set_full(False)

    def _fits(self, size: int) -> bool:
        used = self._bytes + self._reserved
        return used + size <= self.max_bytes or used == 0

    def _set_disk_full(self, full: bool) -> None:
        """Drop-oldest on a full disk: logged like a full outbox, once per episode.

        The episode ends once acknowledgements brought the waiting bytes 10 % below
        where the disk filled up (a hysteresis, so a disk hovering at full logs once).
        """
        if full:
            if self._disk_full_at is None:
                logger.warning(
                    "outbox disk full at %d waiting bytes (policy drop-oldest): dropping the "
                    "oldest batches",
                    self._bytes,
                )
            self._disk_full_at = self._bytes
        elif self._disk_full_at is not None and self._bytes < 0.9 * self._disk_full_at:
            logger.info("outbox disk has room again (%d waiting bytes)", self._bytes)
            self._disk_full_at = None

    def _set_full(self, full: bool) -> None:
        if full and not self._full:
            action = (
                "dropping the oldest batches"
                if self.policy is FullPolicy.DROP_OLDEST
                else "collection waits"
            )
            logger.warning(
                "outbox full (%d of %d bytes, policy %s): %s",
                self._bytes,
                self.max_bytes,
                self.policy.value,
                action,
            )
        elif not full and self._full:
            logger.info("outbox has room again (%d of %d bytes)", self._bytes, self.max_bytes)
        self._full = full

    def _drop(
        self, more: Callable[[], bool], *, within: tuple[int, int] | None = None
    ) -> list[int]:
        """Drop oldest waiting batches while ``more()``; return the positions dropped."""
        idx = self._index
        dropped: list[int] = []
        for i in idx.oldest():  # marking the yielded position done does not upset the scan
            if not more():
                break
            if within is not None and not within[0] <= idx.seq[i] <= within[1]:
                if idx.seq[i] > within[1]:
                    break
                continue
            idx.state[i] = DONE
            self._count -= 1
            self._points -= idx.points[i]
            self._bytes -= idx.size[i]
            self._counters["dropped_batches"] += 1
            self._counters["dropped_points"] += idx.points[i]
            dropped.append(i)
        return dropped

    async def _forget(self, positions: list[int]) -> bool:
        """Tell the store about dropped records and save the drop before reusing space.

        Returns whether the state was saved (and the freed storage released).
        """
        if not positions:
            return True
        idx = self._index
        records = [(idx.seq[i], idx.size[i]) for i in positions]
        await self._run(self.store.mark_done, records)
        self._dirty = True
        self._notify_room()
        try:
            await self._checkpoint()
        except StorageUnavailable as err:
            logger.debug("outbox: cannot save the state yet: %s", err)
            return False
        return True

    async def _commit(self, payload: bytes, points: int) -> int:
        """Group commit: the first waiter writes everything pending with one sync."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[int] = loop.create_future()
        fut.add_done_callback(_consume)
        self._pending.append((payload, points, fut))
        async with self._write_lock:
            if not fut.done():
                group, self._pending = self._pending, []
                await asyncio.shield(self._write_group(group))
        return fut.result()

    async def _write_group(self, group: list[tuple[bytes, int, asyncio.Future[int]]]) -> None:
        appended_ns = self._clock.now_ns()
        try:
            results = await self._run(
                self.store.append, [(p, n) for p, n, _ in group], appended_ns=appended_ns
            )
        except (OutboxError, OSError, ValueError) as err:
            if isinstance(err, OutboxFailed):
                self._fail(err)
            error: Exception = err
            if isinstance(err, OSError):
                error = StorageUnavailable(str(err), errno=err.errno)
            for *_, fut in group:
                if not fut.done():
                    fut.set_exception(error)
            return
        now = time.monotonic()
        total = 0
        for (_payload, points, fut), (seq, loc, size) in zip(group, results, strict=True):
            self._index.add(seq, loc, size, points, appended_ns)
            self._count += 1
            self._points += points
            self._bytes += size
            total += size
            self._appended_batches += 1
            self._appended_points += points
            self._next_seq = seq + 1
            if not fut.done():
                fut.set_result(seq)
        self._rate.append((now, total))
        self._signal()

    def _fail(self, err: OutboxFailed) -> None:
        if self._failed is None:
            logger.critical("%s", err)
        self._failed = err
        self._notify_room()
        self._signal()

    async def _reclaim(self, seen: int) -> bool:
        """Free the oldest storage unit by dropping its waiting batches (drop-oldest on ENOSPC)."""
        async with self._reclaim_lock:
            if self._reclaims != seen:  # another append freed space meanwhile: just retry
                return True
            unit = await self._run(self.store.oldest_unit)
            if unit is None:
                return False
            if self._dirty and not await self._forget_nothing():
                return False  # the state cannot be saved: dropping more would not help
            dropped = self._drop(lambda: True, within=unit)
            if dropped:
                saved = await self._forget(dropped)
            else:  # perhaps it is all acknowledged already: a checkpoint frees it
                saved = await self._forget_nothing()
            self._reclaims += 1
            return bool(dropped) and saved

    async def _forget_nothing(self) -> bool:
        try:
            await self._checkpoint()
        except StorageUnavailable:
            return False
        return True

    async def _wait_for_space(self, delay: float) -> None:
        if self._dirty:  # acknowledged segments can be deleted: that may be the space
            await self._forget_nothing()
        await self._wait_room(delay)

    async def _wait_room(self, timeout_s: float | None = None) -> None:
        """Wait until an acknowledgement, drop or release may have made room."""
        event = self._room_event
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), timeout_s)

    def _notify_room(self) -> None:
        self._room_event.set()
        self._room_event = asyncio.Event()

    def _storage_down(self, err: StorageUnavailable) -> None:
        if self._storage_error is None:
            logger.error(
                "outbox storage unavailable: %s; collection waits (policy %s) and resumes "
                "by itself once space is freed",
                err,
                self.policy.value,
            )
        self._storage_error = str(err)

    def _storage_up(self) -> None:
        if self._storage_error is not None:
            logger.info("outbox storage writable again")
        self._storage_error = None

    async def _expire(self) -> None:
        if self.max_age_s is None or not self._count:
            return
        limit = self._clock.now_ns() - int(self.max_age_s * 1e9)
        idx = self._index
        first = next(iter(idx.oldest()), None)
        if first is None or idx.appended[first] >= limit:
            return
        last = self._last_older(limit)
        dropped = self._drop(lambda: True, within=(idx.seq[first], last))
        if dropped:
            logger.warning(
                "outbox: %d batch(es) older than %g s dropped", len(dropped), self.max_age_s
            )
        await self._forget(dropped)

    def _last_older(self, limit_ns: int) -> int:
        idx = self._index
        last = 0
        for i in idx.oldest():
            if idx.appended[i] >= limit_ns:
                break
            last = idx.seq[i]
        return last

    # ------------------------------------------------------------ the sender
    async def peek(
        self,
        limit: int,
        *,
        lane: Lane = Lane.OLDEST,
        before_ns: int | None = None,
        since_ns: int | None = None,
    ) -> list[StoredBatch]:
        """Lease up to ``limit`` waiting batches (see :class:`~.base.Outbox`)."""
        if self._failed is not None or not self._opened or self._closed or limit <= 0:
            return []
        idx = self._index
        lo, hi = idx.head, len(idx.state)
        if since_ns is not None:  # the recent window is short: find its start from the end
            while hi > lo and idx.appended[hi - 1] >= since_ns:
                hi -= 1
            lo, hi = hi, len(idx.state)
        order = range(lo, hi) if lane is Lane.OLDEST else range(hi - 1, lo - 1, -1)
        chosen: list[int] = []
        for i in order:
            if idx.state[i] != WAITING:
                continue
            if before_ns is not None and idx.appended[i] >= before_ns:
                if lane is Lane.OLDEST:
                    break
                continue
            chosen.append(i)
            if len(chosen) >= limit:
                break
        if not chosen:
            if not self._has_waiting():
                self._available.clear()
            return []
        for i in chosen:
            idx.state[i] = LEASED
        wanted = [
            (idx.seq[i], idx.loc[i], idx.size[i], idx.points[i], idx.appended[i]) for i in chosen
        ]
        where = [(seq, loc, size) for seq, loc, size, _, _ in wanted]
        read = await self._run(_read_all, self.store, where)
        out: list[StoredBatch] = []
        corrupt: list[int] = []
        for (seq, _loc, _size, points, appended), payload in zip(wanted, read, strict=True):
            if payload is None:
                corrupt.append(seq)
                continue
            out.append(StoredBatch(seq=seq, points=points, appended_ns=appended, payload=payload))
        if corrupt:
            logger.warning("outbox: %d damaged record(s) skipped while reading", len(corrupt))
            self._counters["corrupt_records"] += len(corrupt)
            await self._finish(corrupt, kind=None)
        return out

    def _has_waiting(self) -> bool:
        return next(iter(self._index.oldest()), None) is not None

    async def wait_available(self, timeout_s: float | None = None) -> bool:
        """Wait until batches may be waiting (or ``timeout_s``); True if there are some."""
        if self._has_waiting():
            return True
        self._available.clear()
        try:
            await asyncio.wait_for(self._available.wait(), timeout_s)
        except TimeoutError:
            return False
        return True

    async def ack(self, seqs: Iterable[int]) -> None:
        """The platform committed these batches: they leave the outbox."""
        await self._finish(seqs, kind="acked")

    async def quarantined(self, seqs: Iterable[int]) -> None:
        """These batches were moved to quarantine: they leave the outbox, counted."""
        await self._finish(seqs, kind="quarantined")

    def release(self, seqs: Iterable[int]) -> None:
        """Sending failed: these batches wait again."""
        idx = self._index
        any_back = False
        for seq in seqs:
            i = idx.find(seq)
            if i is not None and idx.state[i] == LEASED:
                idx.state[i] = WAITING
                any_back = True
        if any_back:
            self._signal()
            self._notify_room()  # a drop-oldest append may be waiting for a droppable batch

    async def _finish(self, seqs: Iterable[int], *, kind: str | None) -> None:
        idx = self._index
        records: list[tuple[int, int]] = []
        for seq in seqs:
            i = idx.find(seq)
            if i is None or idx.state[i] == DONE:
                continue
            idx.state[i] = DONE
            self._count -= 1
            self._points -= idx.points[i]
            self._bytes -= idx.size[i]
            if kind is not None:
                self._counters[f"{kind}_batches"] += 1
                self._counters[f"{kind}_points"] += idx.points[i]
            records.append((seq, idx.size[i]))
        if not records:
            return
        await self._run(self.store.mark_done, records)
        self._dirty = True
        self._notify_room()
        self._set_disk_full(False)
        if time.monotonic() - self._last_checkpoint >= self._checkpoint_interval_s:
            await self._forget_nothing()

    async def maintain(self) -> None:
        """Expire old batches and save pending acknowledgements; call about once a second."""
        if not self._opened or self._closed or self._failed is not None:
            return
        await self._expire()
        if self._dirty and time.monotonic() - self._last_checkpoint >= self._checkpoint_interval_s:
            await self._forget_nothing()

    async def flush(self) -> None:
        """Save the acknowledgement state now."""
        await self._checkpoint()

    async def _checkpoint(self) -> None:
        if not self._opened or self._failed is not None:
            return
        floor, done = self._index.floor_and_done(self._next_seq)
        self._dirty = False
        self._last_checkpoint = time.monotonic()
        try:
            await self._run(
                self.store.checkpoint, floor=floor, done=done, counters=dict(self._counters)
            )
        except OutboxFailed as err:
            self._fail(err)
            raise
        except StorageUnavailable:
            self._dirty = True
            raise

    # ----------------------------------------------------------------- stats
    def stats(self) -> OutboxStats:
        """The figures for ``/healthz``, ``/metrics`` and the platform."""
        idx = self._index
        first = next(iter(_undone(idx)), None)
        oldest_age = 0.0
        if first is not None:
            oldest_age = max(0.0, (self._clock.now_ns() - idx.appended[first]) / 1e9)
        rate = self._append_rate()
        free = self.store.disk_free() if self._opened else 0
        room = min(max(0, self.max_bytes - self._bytes), free)
        hours = room / rate / 3600 if rate > 0 else None
        return OutboxStats(
            batches=self._count,
            points=self._points,
            bytes=self._bytes,
            oldest_age_s=oldest_age,
            max_bytes=self.max_bytes,
            disk_free_bytes=free,
            hours_left=hours,
            append_rate_bps=rate,
            appended_batches=self._appended_batches,
            appended_points=self._appended_points,
            acked_batches=self._counters["acked_batches"],
            acked_points=self._counters["acked_points"],
            dropped_batches=self._counters["dropped_batches"],
            dropped_points=self._counters["dropped_points"],
            quarantined_batches=self._counters["quarantined_batches"],
            corrupt_records=self._counters["corrupt_records"],
            torn_tails=self._counters["torn_tails"],
            truncated_bytes=self._counters["truncated_bytes"],
            policy=self.policy.value,
            full=self._full or self._disk_full_at is not None or self._storage_error is not None,
            storage_error=self._storage_error,
            next_seq=self._next_seq,
        )

    def _append_rate(self) -> float:
        now = time.monotonic()
        while self._rate and now - self._rate[0][0] > _RATE_WINDOW_S:
            self._rate.popleft()
        if not self._rate:
            return 0.0
        span = max(now - self._rate[0][0], 1.0)
        return sum(b for _, b in self._rate) / span


def _undone(idx: Index) -> Iterable[int]:
    for i in range(idx.head, len(idx.state)):
        if idx.state[i] != DONE:
            yield i


def _read_all(store: LogStore, wanted: list[tuple[int, int, int]]) -> list[bytes | None]:
    out: list[bytes | None] = []
    for seq, loc, size in wanted:
        try:
            out.append(store.read(seq, loc, size))
        except (CorruptRecord, OSError) as err:
            logger.warning("outbox: cannot read batch %d: %s", seq, err)
            out.append(None)
    return out


def _consume(fut: asyncio.Future[int]) -> None:
    """Mark a group member's exception as seen when its caller was cancelled."""
    if not fut.cancelled():
        fut.exception()
