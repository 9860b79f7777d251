"""The embedded historian: one DuckDB file, one writer thread, an async façade.

The event loop never waits on DuckDB. :meth:`DuckDBHistorian.write` only counts the batch
into a queue bounded by pending rows (policy: block the writer, i.e. backpressure) and
hands it to the writer thread (:mod:`~shopfloor.server.historian.writer`), which coalesces
batches into large sorted commits. Reads run on a small pool of reader threads, each with
its own DuckDB cursor; DuckDB's MVCC gives every read a snapshot of committed data, so a
reader never sees a half-written commit and never blocks the writer. Tag lookups and
:meth:`~DuckDBHistorian.latest` are served from the writer's committed in-memory snapshot.

Batches from remote edges go through :meth:`~DuckDBHistorian.write_acknowledged`, which
answers only after the commit that holds the batch and its ingest-ledger row, and stores a
batch once per ``(edge, seq)`` however often it is sent (see the writer and
:mod:`~shopfloor.server.historian.ledger`).

Example::

    historian = DuckDBHistorian(Path("var/historian.duckdb"))
    await historian.start()
    await historian.write(batch)
    await historian.flush()
    table = await historian.read_raw("plant/line1/press/temp", start_ns, end_ns)
    await historian.close()
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import duckdb
import numpy as np
import numpy.typing as npt
import pyarrow as pa

from shopfloor.errors import HistorianError, PayloadError, ShutdownError
from shopfloor.model import PointBatch, TagMeta, now_ns
from shopfloor.server.historian import duckdb_disk_usage, duckdb_fetch, query, schema
from shopfloor.server.historian.admission import (
    Admission,
    State,
    check_ack_key,
    require_running,
)
from shopfloor.server.historian.base import (
    Aggregate,
    BucketSize,
    EdgeLedgerStats,
    HistorianStats,
    Interpolation,
    WriteReceipt,
)
from shopfloor.server.historian.commit_plan import WriteBatch
from shopfloor.server.historian.compaction import CompactionReport
from shopfloor.server.historian.disk_usage import StorageReport, retention_summary
from shopfloor.server.historian.ledger import Ledger
from shopfloor.server.historian.planner import RollupUse
from shopfloor.server.historian.retention import DuckDBRetention
from shopfloor.server.historian.retention_loop import RetentionReport
from shopfloor.server.historian.retention_policy import RetentionPolicy
from shopfloor.server.historian.rollup import RollupSettings
from shopfloor.server.historian.writer import (
    AckWrite,
    Compact,
    Flush,
    PruneLedger,
    Register,
    Stop,
    Writer,
)

if TYPE_CHECKING:
    from shopfloor.server.historian.base import Historian

__all__ = ["DuckDBHistorian"]

logger = logging.getLogger(__name__)

T = TypeVar("T")

_READ_THREADS = 2
"""Reader threads; more would only fight the writer for the same cores."""


class DuckDBHistorian:
    """A :class:`~shopfloor.server.historian.base.Historian` stored in one DuckDB file.

    Args:
        path: the database file (created, with its parent directory, if missing), or
            None for an in-memory database.
        flush_interval_s: commit pending points at the latest this long after the oldest
            of them was accepted.
        flush_rows: commit as soon as this many points are pending.
        memory_limit: DuckDB's ``memory_limit``, for example ``"512MB"``.
        max_pending_rows: the most points accepted but not yet committed; :meth:`write`
            waits while a batch would exceed it (a batch larger than this is accepted
            alone once the queue is empty).
        ack_delay_s: the longest an acknowledged write waits for other writes to share
            its commit (0: commit as soon as the writer is free, with whatever queued).
        ledger_retention_s: how long ingest-ledger rows are kept; a batch arriving more
            than this after a later batch of its edge was committed counts as a duplicate
            (see :mod:`~shopfloor.server.historian.ledger`).
        ledger_max_gaps: the most open gaps in one edge's sequence kept in memory.
        ledger_prune_interval_s: how often old ledger rows are deleted.
        clock: the wall clock in UTC nanoseconds (ledger times and retention).
        compaction_interval_s: how often the writer looks for closed days to rewrite in
            (tag, time) order (None: only on :meth:`compact`); see
            :mod:`~shopfloor.server.historian.compaction`.
        compaction_grace_s: a UTC day is compacted this long after it ended.
        compaction_chunk_rows: the most points one compaction transaction rewrites
            (ingest waits for one such transaction at most).
        retention: raw and rollup retention and the disk budget, enforced every
            ``retention.interval_s`` (None: keep everything); see
            :mod:`~shopfloor.server.historian.retention`.
        rollups: 1-minute and 1-hour rollups answering bucketed queries of whole UTC
            minutes or hours exactly (default: on, refreshed every minute); see
            :mod:`~shopfloor.server.historian.duckdb_rollup`.
    """

    def __init__(
        self,
        path: Path | None,
        *,
        flush_interval_s: float = 1.0,
        flush_rows: int = 100_000,
        memory_limit: str = "512MB",
        max_pending_rows: int = 2_000_000,
        ack_delay_s: float = 0.0,
        ledger_retention_s: float = 7 * 86400.0,
        ledger_max_gaps: int = 10_000,
        ledger_prune_interval_s: float = 600.0,
        clock: Callable[[], int] = now_ns,
        compaction_interval_s: float | None = 600.0,
        compaction_grace_s: float = 600.0,
        compaction_chunk_rows: int = 1_000_000,
        retention: RetentionPolicy | None = None,
        rollups: RollupSettings | None = None,
    ) -> None:
        if compaction_chunk_rows <= 0 or compaction_grace_s < 0:
            raise ValueError("compaction_chunk_rows must be > 0, compaction_grace_s >= 0")
        if compaction_interval_s is not None and compaction_interval_s <= 0:
            raise ValueError("compaction_interval_s must be > 0 (or None)")
        if flush_interval_s <= 0 or flush_rows <= 0 or max_pending_rows <= 0:
            raise ValueError("flush_interval_s, flush_rows and max_pending_rows must be > 0")
        if ack_delay_s < 0 or ledger_retention_s <= 0 or ledger_prune_interval_s <= 0:
            raise ValueError("ack_delay_s must be >= 0, the ledger's times > 0")
        self._path = path
        self._writer = Writer(
            path,
            flush_interval_s=flush_interval_s,
            flush_rows=flush_rows,
            memory_limit=memory_limit,
            on_released=self._released_threadsafe,
            ledger=Ledger(retention_ns=int(ledger_retention_s * 1e9), max_gaps=ledger_max_gaps),
            ack_delay_s=ack_delay_s,
            prune_interval_s=ledger_prune_interval_s,
            clock=clock,
            compaction_interval_s=compaction_interval_s,
            compaction_grace_s=compaction_grace_s,
            compaction_chunk_rows=compaction_chunk_rows,
            rollups=rollups,
        )
        self.rollup_use = RollupUse()
        """How many queries rollups answered."""
        self._rollups = self.rollup_use if rollups is None or rollups.enabled else None
        self._state = State.NEW
        self._retention = DuckDBRetention(
            retention or RetentionPolicy(),
            new_cursor=self._writer.new_cursor,
            tag_ids=lambda: self._writer.snapshot.catalog.ids,
            path=path,
            clock=clock,
        )
        self._clock = clock
        self._loop: asyncio.AbstractEventLoop | None = None
        self._admission = Admission(max_pending_rows, state=lambda: self._state)
        self._readers: ThreadPoolExecutor | None = None
        self._idle_cursors: queue.SimpleQueue[duckdb.DuckDBPyConnection] = queue.SimpleQueue()
        self._cursors: list[duckdb.DuckDBPyConnection] = []
        self._inflight: set[Future[Any]] = set()
        self._lock = threading.Lock()
        self._started = asyncio.Event()
        self._closed = asyncio.Event()

    # ------------------------------------------------------------------- lifecycle
    @property
    def writer_thread(self) -> threading.Thread | None:
        """The writer thread, once started; joined when :meth:`close` returns."""
        return self._writer.thread

    async def start(self) -> None:
        """Open (or create) the database and start the writer. A second call does nothing.

        Raises:
            HistorianError: the database cannot be opened.
            ShutdownError: the historian was already closed.
        """
        if self._state is State.STARTING:
            await self._started.wait()
        if self._state is State.RUNNING:
            return
        if self._state is not State.NEW:
            raise ShutdownError("the historian is closed")
        self._state = State.STARTING
        self._loop = asyncio.get_running_loop()
        self._writer.start()
        try:
            await asyncio.wrap_future(self._writer.ready)
        except (HistorianError, asyncio.CancelledError):
            # failed to open, or cancelled (then the writer closes the database itself)
            self._state = State.CLOSED
            await self._join_writer()
            raise
        finally:
            self._started.set()
        self._readers = ThreadPoolExecutor(_READ_THREADS, thread_name_prefix="historian-read")
        self._retention.start()
        self._state = State.RUNNING

    async def close(self) -> None:
        """Commit everything accepted, then close the database and join every thread.

        Idempotent; concurrent calls all wait for the one close.

        Raises:
            HistorianError: accepted points could not be committed.
        """
        if self._state is State.STARTING:
            await self._started.wait()
        if self._state is State.CLOSING:
            await self._closed.wait()
            return
        if self._state is not State.RUNNING:
            self._state = State.CLOSED
            return
        self._state = State.CLOSING
        self._admission.wake_all()
        try:
            await self._retention.close()
            await self._stop_readers()
            # ShutdownError: the writer already stopped (it crashed); join and report below
            with contextlib.suppress(ShutdownError):
                self._writer.submit(Stop())
            await self._join_writer()
        finally:
            self._state = State.CLOSED
            self._closed.set()

    async def _stop_readers(self) -> None:
        with self._lock:
            inflight = [asyncio.wrap_future(f) for f in self._inflight]
        if inflight:  # their callers get the results; here only the waiting matters
            await asyncio.gather(*inflight, return_exceptions=True)
        if self._readers is not None:
            self._readers.shutdown(wait=True)  # idle by now: only joins the threads
        with self._lock:
            cursors, self._cursors = self._cursors, []
        for cursor in cursors:
            try:
                cursor.close()
            except duckdb.Error:
                logger.exception("closing a historian read cursor failed")

    async def _join_writer(self) -> None:
        # shielded: a cancelled close must not cancel the writer's own last word
        stopped = asyncio.shield(asyncio.wrap_future(self._writer.stopped))
        try:
            await stopped
        finally:
            thread = self._writer.thread
            if thread is not None and self._writer.stopped.done():
                thread.join()  # resolving `stopped` was its last act: this is immediate

    # ---------------------------------------------------------------------- writing
    @property
    def backpressure_waits(self) -> int:
        """How often a writer waited for room under ``max_pending_rows``."""
        return self._admission.waits

    async def write(self, batch: PointBatch) -> None:
        """Accept ``batch``; wait while the pending-row bound would be exceeded.

        Raises:
            ShutdownError: the historian is closing or closed.
        """
        self._require_running()
        n = len(batch)
        if n == 0:
            return
        await self._admission.reserve(n)
        try:
            self._submit(WriteBatch(batch, time.monotonic()))
        except HistorianError:
            self._admission.unreserve(n)
            raise

    async def write_acknowledged(self, batch: PointBatch, *, edge: str, seq: int) -> WriteReceipt:
        """Store a batch from an edge once per ``(edge, seq)``; return after its commit.

        The batch's ledger row is committed in the same transaction as its points. If
        ``(edge, seq)`` was applied before (or is in the same commit), nothing is stored
        and the receipt says ``duplicate``. Cancelling the caller does not withdraw the
        batch: it may still be committed, and a resend is then a duplicate.

        Raises:
            HistorianError: the commit failed; nothing of the batch is stored.
            ShutdownError: the historian is closing or closed.
            PayloadError: ``seq`` is below 1 or ``edge`` is empty.
        """
        self._require_running()
        check_ack_key(edge, seq)
        n = len(batch)
        await self._admission.reserve(n)
        message = AckWrite(batch, edge, seq, time.monotonic())
        try:
            self._submit(message)
        except HistorianError:
            self._admission.unreserve(n)
            raise
        return await asyncio.wrap_future(message.done)

    def ledger_stats(self) -> Mapping[str, EdgeLedgerStats]:
        """Every edge in the ingest ledger, by edge id (committed state); never blocks."""
        return self._writer.ledger_snapshot

    async def prune_ledger(self) -> int:
        """Age the ledger's marks and delete rows past retention now; return rows deleted.

        The writer does this by itself every ``ledger_prune_interval_s``.

        Raises:
            HistorianError: the rows could not be deleted.
            ShutdownError: the historian is closing or closed.
        """
        self._require_running()
        message = PruneLedger()
        self._submit(message)
        return await asyncio.wrap_future(message.done)

    async def compact(self) -> CompactionReport:
        """Rewrite every closed day's new points in (tag, time) order now; return what it did.

        The writer does this by itself every ``compaction_interval_s``. Reads see the same
        points before, during and after; each chunk is one transaction.

        Raises:
            HistorianError: a chunk failed (it changed nothing; earlier chunks stay done).
            ShutdownError: the historian is closing or closed.
        """
        self._require_running()
        message = Compact()
        self._submit(message)
        return await asyncio.wrap_future(message.done)

    async def apply_retention(self) -> RetentionReport:
        """Apply retention and the disk budget now; done by itself every interval.

        Raises:
            HistorianError: a step failed (it changed nothing; earlier days stay deleted).
            ShutdownError: the historian is closing or closed.
        """
        self._require_running()
        return await self._retention.apply()

    async def storage_report(self) -> StorageReport:
        """What the history holds and takes on disk, per tag and table (one scan of points).

        Raises:
            ShutdownError: the historian is closing or closed.
        """
        self._require_running()
        ids = dict(self._writer.snapshot.catalog.ids)
        loop = self._retention.loop
        summary = retention_summary(loop.policy, loop.counters)
        now = self._clock()
        return await self._read(
            lambda cur: duckdb_disk_usage.measure(
                cur, path=self._path, ids=ids, measured_ns=now, retention=summary
            )
        )

    def _submit(
        self, message: Flush | Register | WriteBatch | AckWrite | PruneLedger | Compact
    ) -> None:
        try:
            self._writer.submit(message)
        except ShutdownError as err:  # only when the writer thread died on its own
            raise HistorianError("the historian writer has stopped") from err

    async def flush(self) -> None:
        """Wait until every batch accepted before this call is committed.

        After :meth:`close` there is nothing left to commit and this returns at once.

        Raises:
            HistorianError: some accepted points could not be committed.
        """
        if self._state is State.CLOSING:
            await self._closed.wait()  # close commits everything
            return
        if self._state is not State.RUNNING:
            return
        message = Flush()
        self._submit(message)
        await asyncio.wrap_future(message.done)

    async def register_tags(self, metas: Sequence[TagMeta]) -> None:
        """Create tags or replace their metadata, keyed by path (the last of duplicates wins).

        Raises:
            ShutdownError: the historian is closing or closed.
            HistorianError: the metadata could not be stored.
        """
        self._require_running()
        if not metas:
            return
        message = Register(tuple(metas))
        self._submit(message)
        await asyncio.wrap_future(message.done)

    def _released_threadsafe(self, rows: int) -> None:
        """Called by the writer thread when rows stop being pending."""
        loop = self._loop
        if loop is None:
            return
        # RuntimeError: the loop is closed, so nobody is left waiting for space
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(self._admission.release, rows)

    # ---------------------------------------------------------------------- reading
    async def tags(self) -> list[TagMeta]:
        """Every known tag (committed), sorted by path."""
        self._require_running()
        catalog = self._writer.snapshot.catalog
        return [catalog.metas[p] for p in catalog.sorted_paths]

    async def read_raw(
        self, path: str, start_ns: int, end_ns: int, *, limit: int = 100_000
    ) -> pa.Table:
        """Committed points of one tag with ``start_ns <= ts < end_ns``, oldest first.

        Columns: ts (timestamp ns UTC), value, quality, text; at most ``limit`` rows.

        Raises:
            UnknownTagError: the path names no committed tag.
            PayloadError: ``limit`` is negative.
        """
        self._require_running()
        if limit < 0:
            raise PayloadError("limit", "must not be negative")
        tag_id = self._tag_id(path)
        return await self._read(lambda cur: schema.query_raw(cur, tag_id, start_ns, end_ns, limit))

    async def read_aggregates(
        self,
        path: str,
        start_ns: int,
        end_ns: int,
        *,
        bucket_ns: int,
        aggregates: Sequence[Aggregate],
    ) -> pa.Table:
        """Aggregates of one tag's Good, non-NaN points per bucket of ``bucket_ns``.

        Every aggregate, ``first`` and ``last`` included, looks only at Good points with a
        numeric value; buckets without one are left out. Columns: ts (bucket start) and
        one per distinct aggregate in the order asked (``count`` int64, others float64).
        Computed like :meth:`read_buckets` (UTC buckets).

        Raises:
            UnknownTagError: the path names no committed tag.
            PayloadError: ``bucket_ns`` is not positive.
        """
        self._require_running()
        plan = query.plan_buckets(
            [path],
            start_ns,
            end_ns,
            bucket=bucket_ns,
            aggregates=aggregates,
            dense=False,
            field="bucket_ns",
        )
        ids = np.array([self._tag_id(path)], dtype=np.int64)
        return await self._read(
            lambda cur: duckdb_fetch.answer_buckets(cur, ids, plan, rollups=self._rollups)
        )

    async def read_buckets(
        self,
        paths: Sequence[str],
        start_ns: int,
        end_ns: int,
        *,
        bucket: BucketSize,
        aggregates: Sequence[Aggregate],
        tz: str | None = None,
    ) -> pa.Table:
        """Bucketed aggregates of many tags, every bucket (see the Historian protocol).

        One scan of the range for all tags, on a reader thread that also computes.

        Raises:
            UnknownTagError: a path names no committed tag.
            PayloadError: a bad bucket or aggregate, an unknown zone, too many buckets.
        """
        self._require_running()
        plan = query.plan_buckets(
            paths, start_ns, end_ns, bucket=bucket, aggregates=aggregates, tz=tz
        )
        ids = self._tag_ids(plan.paths)
        return await self._read(
            lambda cur: duckdb_fetch.answer_buckets(cur, ids, plan, rollups=self._rollups)
        )

    async def read_at(
        self,
        paths: Sequence[str],
        times_ns: Sequence[int] | npt.NDArray[np.int64],
        *,
        method: Interpolation = Interpolation.PREVIOUS,
    ) -> pa.Table:
        """The value of every path at every time (see the Historian protocol).

        Raises:
            UnknownTagError: a path names no committed tag.
            PayloadError: an unknown method, times not integers, too many values.
        """
        self._require_running()
        plan = query.plan_at(paths, times_ns, method=method)
        ids = self._tag_ids(plan.paths)
        return await self._read(lambda cur: duckdb_fetch.answer_at(cur, ids, plan))

    async def latest(self, paths: Sequence[str] | None = None) -> pa.Table:
        """The last committed point of every tag, or of ``paths`` in the order given.

        Tags without points are left out. Served from memory, without touching DuckDB.
        Columns: path, ts, value, quality, text.

        Raises:
            UnknownTagError: one of ``paths`` names no committed tag.
        """
        self._require_running()
        return self._writer.snapshot.latest_table(paths)

    def stats(self) -> HistorianStats:
        """Counters for status lines; cheap, never blocks."""
        w = self._writer
        kept = self._retention.loop.counters
        done = self._writer.compaction_totals
        return HistorianStats(
            points_written=w.points_written,
            points_pending=self._admission.pending,
            tags=len(w.snapshot.catalog.ids),
            flushes=w.flushes,
            last_flush_ms=w.last_flush_ms,
            retention_deleted_points=kept.deleted_points,
            budget_evictions=kept.budget_evictions,
            storage_used_bytes=-1 if kept.used_bytes is None else kept.used_bytes,
            compacted_points=done.points,
            rollup_rows=done.rollup_rows,
        )

    def _tag_ids(self, paths: Sequence[str]) -> npt.NDArray[np.int64]:
        return self._writer.snapshot.catalog.ids_of(paths)

    def _tag_id(self, path: str) -> int:
        return self._writer.snapshot.catalog.id_of(path)

    async def _read(self, query: Callable[[duckdb.DuckDBPyConnection], T]) -> T:
        assert self._readers is not None
        future = self._readers.submit(self._run_read, query)
        with self._lock:
            self._inflight.add(future)
        future.add_done_callback(self._read_done)
        return await asyncio.wrap_future(future)

    def _read_done(self, future: Future[Any]) -> None:
        with self._lock:
            self._inflight.discard(future)

    def _run_read(self, query: Callable[[duckdb.DuckDBPyConnection], T]) -> T:
        """Run ``query`` on a reader thread with a cursor nobody else is using."""
        try:
            cursor = self._idle_cursors.get_nowait()
        except queue.Empty:
            cursor = self._writer.new_cursor()
            with self._lock:
                self._cursors.append(cursor)
        try:
            return query(cursor)
        except duckdb.Error as err:
            raise HistorianError(f"historian read failed: {err}") from err
        finally:
            self._idle_cursors.put(cursor)

    def _require_running(self) -> None:
        require_running(self._state)


if TYPE_CHECKING:

    def _implements_protocol(h: DuckDBHistorian) -> Historian:
        return h
