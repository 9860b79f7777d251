"""The PostgreSQL historian: the plant's own database server behind the same protocol.

It answers every query exactly like the embedded DuckDB historian (the contract suite in
:mod:`shopfloor.testing.historian_contract` runs the same assertions over both) and keeps
the same write model: :meth:`PostgresHistorian.write` counts a batch into a queue bounded
by pending rows (policy: block the writer, i.e. backpressure) and one writer task
(:mod:`~shopfloor.server.historian.pg_writer`) coalesces batches into large sorted
commits with binary ``COPY``. Reads run on a small pool of their own connections, each
statement seeing committed data only; tag lookups and :meth:`~PostgresHistorian.latest`
are served from the writer's committed in-memory snapshot. Table layout, partitioning
and TimescaleDB: :mod:`~shopfloor.server.historian.pg_schema`.

One historian writes to one schema of a database; a second one is refused (an advisory
lock), because each keeps the tag catalog and the ingest ledger's index in memory —
unless every one of them is opened with ``shared=True`` (ingest workers scaled out, API
servers beside them): then commits are serialised across processes and duplicates are
decided by the ledger table (:mod:`~shopfloor.server.historian.pg_shared`).

Example::

    historian = PostgresHistorian("host=db.plant.local dbname=shopfloor user=shopfloor")
    await historian.start()
    await historian.write(batch)
    await historian.flush()
    table = await historian.read_raw("plant/line1/press/temp", start_ns, end_ns)
    await historian.close()

The password belongs in ``~/.pgpass`` or the ``PGPASSWORD`` environment variable, not in
the DSN of a configuration file.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
import psycopg
import pyarrow as pa
from psycopg.conninfo import conninfo_to_dict

from shopfloor.errors import HistorianError, PayloadError, ShutdownError
from shopfloor.model import PointBatch, TagMeta, now_ns
from shopfloor.server.historian import (
    pg_disk_usage,
    pg_fetch,
    pg_rollup,
    pg_schema,
    query,
)
from shopfloor.server.historian.admission import (
    Admission,
    State,
    check_ack_key,
    require_running,
)
from shopfloor.server.historian.aggregate import Points
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
from shopfloor.server.historian.pg_compaction import PgCompactor
from shopfloor.server.historian.pg_feed import FeedRoute
from shopfloor.server.historian.pg_retention import PgRetention
from shopfloor.server.historian.pg_writer import (
    AckWrite,
    Flush,
    PgWriter,
    PruneLedger,
    Register,
    Stop,
)
from shopfloor.server.historian.planner import RollupUse
from shopfloor.server.historian.retention_loop import RetentionReport
from shopfloor.server.historian.retention_policy import RetentionPolicy
from shopfloor.server.historian.rollup import RollupSettings

if TYPE_CHECKING:
    from shopfloor.server.historian.base import Historian

__all__ = ["PostgresHistorian"]

logger = logging.getLogger(__name__)


class _ReadPool:
    """At most ``size`` read connections, opened on demand and reused.

    A connection that broke is closed and replaced by the next read that needs one.
    """

    def __init__(self, connect: Callable[[], Any], size: int) -> None:
        self._connect = connect
        self._size = size
        self._idle: list[psycopg.AsyncConnection[Any]] = []
        self._open = 0
        self._freed = asyncio.Condition()
        self._active = 0
        self._quiet = asyncio.Event()
        self._quiet.set()

    @contextlib.asynccontextmanager
    async def connection(self) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        """Lend a connection for one read; wait while all ``size`` are lent."""
        self._active += 1
        self._quiet.clear()
        try:
            con = await self._acquire()
            keep = False
            try:
                yield con
                keep = True
            except psycopg.Error:
                keep = not con.broken  # a failed statement leaves an autocommit session usable
                raise
            finally:
                # anything else (cancellation above all) may leave a query running: drop it
                await self._give_back(con, keep=keep and not con.closed)
        finally:
            self._active -= 1
            if not self._active:
                self._quiet.set()

    async def _acquire(self) -> psycopg.AsyncConnection[Any]:
        async with self._freed:
            while not self._idle and self._open >= self._size:
                await self._freed.wait()
            if self._idle:
                return self._idle.pop()
            self._open += 1
        try:
            con: psycopg.AsyncConnection[Any] = await self._connect()
        except BaseException:
            async with self._freed:
                self._open -= 1
                self._freed.notify()
            raise
        return con

    async def _give_back(self, con: psycopg.AsyncConnection[Any], *, keep: bool) -> None:
        if not keep:
            with contextlib.suppress(psycopg.Error):
                await con.close()
        async with self._freed:
            if keep:
                self._idle.append(con)
            else:
                self._open -= 1
            self._freed.notify()

    async def close(self) -> None:
        """Wait for the reads in flight, then close every connection."""
        await self._quiet.wait()
        idle, self._idle = self._idle, []
        self._open -= len(idle)
        for con in idle:
            try:
                await con.close()
            except psycopg.Error:
                logger.exception("closing a historian read connection failed")


class PostgresHistorian:
    """A :class:`~shopfloor.server.historian.base.Historian` stored in PostgreSQL.

    Args:
        dsn: a libpq connection string or URI (``host=… dbname=… user=…``).
        schema: the schema holding the historian's tables (created if missing).
        flush_interval_s: commit pending points at the latest this long after the oldest
            of them was accepted.
        flush_rows: commit as soon as this many points are pending.
        max_pending_rows: the most points accepted but not yet committed; :meth:`write`
            waits while a batch would exceed it (a larger batch is accepted alone).
        ack_delay_s: the longest an acknowledged write waits for other writes to share
            its commit.
        ledger_retention_s: how long ingest-ledger rows are kept (see
            :mod:`~shopfloor.server.historian.ledger`).
        ledger_max_gaps: the most open gaps in one edge's sequence kept in memory.
        ledger_prune_interval_s: how often old ledger rows are deleted.
        read_connections: the most connections reads use at once.
        timescale: for a new schema, use a TimescaleDB hypertable: None when the
            extension can be loaded, True always (fail without it), False never (the
            default: the blocks layout, the one the test suite covers).
        clock: the wall clock in UTC nanoseconds (ledger times, partitions ahead).
        compaction_interval_s: how often closed hours are moved into compressed blocks
            (blocks layout; None: only on :meth:`compact`); see
            :mod:`~shopfloor.server.historian.pg_compaction`.
        compaction_grace_s: an hour is compacted this long after it ended.
        compaction_chunk_rows: the most points one compaction statement moves.
        retention: raw and rollup retention and the disk budget, enforced every
            ``retention.interval_s`` (None: keep everything); see
            :mod:`~shopfloor.server.historian.pg_retention`.
        rollups: 1-minute and 1-hour rollups, written by compaction (blocks layout),
            answering bucketed queries of whole UTC minutes or hours exactly (default:
            on); see :mod:`~shopfloor.server.historian.pg_rollup`.
        shared: other processes write the same schema, each opened with ``shared=True``
            (see :mod:`~shopfloor.server.historian.pg_shared`).
        feed: with ``shared``: copy the points this route asks for into the committed-
            points feed the alarm partition owners read (:mod:`.pg_feed`).
    """

    def __init__(
        self,
        dsn: str,
        *,
        schema: str = "shopfloor",
        flush_interval_s: float = 1.0,
        flush_rows: int = 100_000,
        max_pending_rows: int = 2_000_000,
        ack_delay_s: float = 0.0,
        ledger_retention_s: float = 7 * 86400.0,
        ledger_max_gaps: int = 10_000,
        ledger_prune_interval_s: float = 600.0,
        read_connections: int = 2,
        timescale: bool | None = False,
        clock: Callable[[], int] = now_ns,
        compaction_interval_s: float | None = 600.0,
        compaction_grace_s: float = 600.0,
        compaction_chunk_rows: int = 1_000_000,
        retention: RetentionPolicy | None = None,
        rollups: RollupSettings | None = None,
        shared: bool = False,
        feed: FeedRoute | None = None,
    ) -> None:
        if compaction_chunk_rows <= 0 or compaction_grace_s < 0:
            raise ValueError("compaction_chunk_rows must be > 0, compaction_grace_s >= 0")
        if compaction_interval_s is not None and compaction_interval_s <= 0:
            raise ValueError("compaction_interval_s must be > 0 (or None)")
        if flush_interval_s <= 0 or flush_rows <= 0 or max_pending_rows <= 0:
            raise ValueError("flush_interval_s, flush_rows and max_pending_rows must be > 0")
        if ack_delay_s < 0 or ledger_retention_s <= 0 or ledger_prune_interval_s <= 0:
            raise ValueError("ack_delay_s must be >= 0, the ledger's times > 0")
        if read_connections < 1 or not schema:
            raise ValueError("read_connections must be >= 1 and schema not empty")
        try:
            params = conninfo_to_dict(dsn)
        except psycopg.ProgrammingError as err:
            raise ValueError(f"not a PostgreSQL connection string: {err}") from None
        self._extra: dict[str, Any] = {}
        if "application_name" not in params:
            self._extra["application_name"] = "shopfloor-historian"
        if "connect_timeout" not in params:
            self._extra["connect_timeout"] = 10
        self._dsn = dsn
        self._schema = schema
        self._admission = Admission(max_pending_rows, state=lambda: self._state)
        self._writer = PgWriter(
            self._connect,
            schema_name=schema,
            flush_interval_s=flush_interval_s,
            flush_rows=flush_rows,
            on_released=self._admission.release,
            ledger=Ledger(retention_ns=int(ledger_retention_s * 1e9), max_gaps=ledger_max_gaps),
            ack_delay_s=ack_delay_s,
            prune_interval_s=ledger_prune_interval_s,
            clock=clock,
            timescale=timescale,
            shared=shared,
            feed=feed,
        )
        self._readers = _ReadPool(self._connect_reader, read_connections)
        self._compactor = PgCompactor(
            self._connect_reader,
            clock=clock,
            interval_s=compaction_interval_s,
            grace_ns=int(compaction_grace_s * 1e9),
            chunk_points=compaction_chunk_rows,
            rollups=rollups,
        )
        self.rollup_use = RollupUse()
        """How many queries rollups answered."""
        self._rollups = self.rollup_use if rollups is None or rollups.enabled else None
        self._compaction: asyncio.Task[None] | None = None
        self._retention = PgRetention(
            retention or RetentionPolicy(),
            connect=self._connect_reader,
            schema_name=schema,
            layout=lambda: self.layout,
            tag_ids=lambda: self._writer.snapshot.catalog.ids,
            partition_dropped=self._partition_dropped,
            clock=clock,
        )
        self._clock = clock
        self._state = State.NEW
        self._started = asyncio.Event()
        self._closed = asyncio.Event()

    @property
    def layout(self) -> pg_schema.Layout:
        """``"partitioned"`` (native daily partitions) or ``"timescale"`` (hypertable)."""
        return self._writer.layout

    async def _connect(self) -> psycopg.AsyncConnection[Any]:
        return await psycopg.AsyncConnection.connect(self._dsn, autocommit=True, **self._extra)

    async def _connect_reader(self) -> psycopg.AsyncConnection[Any]:
        try:
            con = await self._connect()
        except psycopg.Error as err:
            raise HistorianError(f"cannot connect to the historian database: {err}") from err
        try:
            await pg_schema.set_search_path(con, self._schema)
            for statement in pg_schema.READER_SETTINGS:
                await con.execute(statement)
        except psycopg.Error as err:
            await con.close()
            raise HistorianError(f"cannot set up a historian read connection: {err}") from err
        return con

    # ------------------------------------------------------------------- lifecycle
    @property
    def writer_task(self) -> asyncio.Task[None] | None:
        """The writer task, once started; finished when :meth:`close` returns."""
        return self._writer.task

    async def start(self) -> None:
        """Connect, create the schema if missing and start the writer. A second call does nothing.

        Raises:
            HistorianError: the database cannot be reached or set up, or another
                historian writes to the same schema.
            ShutdownError: the historian was already closed.
        """
        if self._state is State.STARTING:
            await self._started.wait()
        if self._state is State.RUNNING:
            return
        if self._state is not State.NEW:
            raise ShutdownError("the historian is closed")
        self._state = State.STARTING
        try:
            await self._writer.open()
        except BaseException:
            self._state = State.CLOSED
            raise
        finally:
            self._started.set()
        self._writer.start()
        if self.layout == "blocks":
            self._compaction = asyncio.create_task(
                self._compactor.run(), name="historian-pg-compaction"
            )
        self._retention.start()
        self._state = State.RUNNING

    async def close(self) -> None:
        """Commit everything accepted, then close every connection. Idempotent.

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
            if self._compaction is not None:  # a statement in flight is rolled back
                self._compaction.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._compaction
            await self._compactor.close()
            await self._readers.close()
            with contextlib.suppress(ShutdownError):  # the writer stopped on its own
                self._writer.submit(Stop())
            task = self._writer.task
            if task is not None:
                # shielded: a cancelled close must not cancel the writer's last commit
                await asyncio.shield(task)
            failure = self._writer.failure()
            if failure is not None:
                raise failure
        finally:
            self._state = State.CLOSED
            self._closed.set()

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

        Cancelling the caller does not withdraw the batch: it may still be committed,
        and a resend is then a duplicate.

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
        return await asyncio.shield(message.done)

    def ledger_stats(self) -> Mapping[str, EdgeLedgerStats]:
        """Every edge in the ingest ledger, by edge id (committed state); never blocks."""
        return self._writer.ledger_snapshot

    async def prune_ledger(self) -> int:
        """Age the ledger's marks and delete rows past retention now; return rows deleted.

        Raises:
            HistorianError: the rows could not be deleted.
            ShutdownError: the historian is closing or closed.
        """
        self._require_running()
        message = PruneLedger()
        self._submit(message)
        return await message.done

    async def compact(self) -> CompactionReport:
        """Move every closed hour's points into compressed blocks now; return what it did.

        Done by itself every ``compaction_interval_s``. Only the blocks layout compacts
        (TimescaleDB compresses by its own policy; a version-1 schema keeps its rows).

        Raises:
            HistorianError: a chunk failed (it moved nothing; earlier chunks stay moved).
            ShutdownError: the historian is closing or closed.
        """
        self._require_running()
        if self.layout != "blocks":
            return CompactionReport(0, 0, 0, 0.0, 0.0)
        return await self._compactor.compact()

    async def apply_retention(self) -> RetentionReport:
        """Apply retention and the disk budget now; done by itself every interval.

        Raises:
            HistorianError: a statement failed (earlier ones stay done).
            ShutdownError: the historian is closing or closed.
        """
        self._require_running()
        return await self._retention.apply()

    async def storage_report(self) -> StorageReport:
        """What the history holds and takes on disk, per tag and table.

        Raises:
            HistorianError: a query failed.
            ShutdownError: the historian is closing or closed.
        """
        self._require_running()
        ids = dict(self._writer.snapshot.catalog.ids)
        loop = self._retention.loop
        summary = retention_summary(loop.policy, loop.counters)
        try:
            async with self._readers.connection() as con:
                return await pg_disk_usage.measure(
                    con,
                    schema_name=self._schema,
                    layout=self.layout,
                    ids=ids,
                    measured_ns=self._clock(),
                    retention=summary,
                )
        except psycopg.Error as err:
            raise HistorianError(f"measuring the historian's storage failed: {err}") from err

    def _partition_dropped(self, day: int) -> None:
        """Retention dropped a daily partition: the writer creates it again if needed."""
        partitions = self._writer._partitions  # the writer's cache of attached partitions
        if partitions is not None:
            partitions.discard(day)

    def _submit(self, message: Flush | Register | WriteBatch | AckWrite | PruneLedger) -> None:
        try:
            self._writer.submit(message)
        except ShutdownError as err:  # only when the writer task died on its own
            raise HistorianError("the historian writer has stopped") from err

    async def flush(self) -> None:
        """Wait until every batch accepted before this call is committed.

        Raises:
            HistorianError: some accepted points could not be committed.
        """
        if self._state is State.CLOSING:
            await self._closed.wait()
            return
        if self._state is not State.RUNNING:
            return
        message = Flush()
        self._submit(message)
        await message.done

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
        await message.done

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
        params = {"tag": tag_id, "start": int(start_ns), "end": int(end_ns), "limit": limit}
        row = await self._query(pg_schema.RAW_SQL, params)
        return pg_schema.raw_table(row)

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
        return await self._answer_buckets(np.array([self._tag_id(path)], np.int64), plan)

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

        One statement fetches the range of all tags; the engine computes in a thread.

        Raises:
            UnknownTagError: a path names no committed tag.
            PayloadError: a bad bucket or aggregate, an unknown zone, too many buckets.
        """
        self._require_running()
        plan = query.plan_buckets(
            paths, start_ns, end_ns, bucket=bucket, aggregates=aggregates, tz=tz
        )
        return await self._answer_buckets(self._tag_ids(plan.paths), plan)

    async def _answer_buckets(self, ids: npt.NDArray[np.int64], plan: query.BucketPlan) -> pa.Table:
        blocks = self.layout == "blocks"
        return await pg_rollup.answer_buckets(
            self._readers.connection, ids, plan, rollups=self._rollups, blocks=blocks
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
        if plan.empty:
            return plan.answer(Points.empty(), None, None)
        fetch = pg_fetch.Fetch(
            ids,
            plan.start_ns,
            plan.end_ns,
            usable_only=True,
            prior_good=True,
            following=plan.following,
        )
        row = await self._query(fetch.statement(), fetch.params())

        def answer() -> pa.Table:
            fetched = fetch.decode(row)
            return plan.answer(fetched.points, fetched.prior, fetched.following)

        return await asyncio.to_thread(answer)

    async def latest(self, paths: Sequence[str] | None = None) -> pa.Table:
        """The last committed point of every tag, or of ``paths`` in the order given.

        Tags without points are left out. Served from memory, without a query.
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
        done = self._compactor.totals
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

    async def _query(self, query: str, params: Mapping[str, Any]) -> list[bytes | None]:
        """Run a one-row query on a read connection; return its cells as binary values."""
        try:
            async with self._readers.connection() as con, con.cursor(binary=True) as cur:
                await cur.execute(query, params)
                result = cur.pgresult
                if result is None or result.ntuples != 1:
                    raise HistorianError("a historian query returned no row")
                return [result.get_value(0, i) for i in range(result.nfields)]
        except psycopg.Error as err:
            raise HistorianError(f"historian read failed: {err}") from err

    def _require_running(self) -> None:
        require_running(self._state)


if TYPE_CHECKING:

    def _implements_protocol(h: PostgresHistorian) -> Historian:
        return h
