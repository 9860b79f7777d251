"""The one task that writes to the PostgreSQL historian, over one connection.

The same single-writer pattern as the DuckDB historian's thread
(:mod:`~shopfloor.server.historian.writer`), as an asyncio task: psycopg's async
connection waits on the socket, so the event loop never blocks on the database. Batches
are coalesced, sorted by ``(tag_id, ts)`` and committed with one binary ``COPY`` (of one
row per tag and hour in the blocks layout, :mod:`~.pg_blocks`) when
``flush_rows`` are pending or the oldest pending batch is ``flush_interval_s`` old; an
acknowledged write (an edge waits for the answer) makes the writer commit what is queued
at most ``ack_delay_s`` later. The batch's ``(edge, seq)`` goes into ``ingest_ledger`` in
the same transaction as its points, and a batch applied before stores nothing.

What readers may look at without a query (the tag catalog and every tag's last value) is
an immutable :class:`~.snapshot.Snapshot` replaced only after the commit returned.

A commit that fails is rolled back; the points of plain writes are dropped and the next
flush reports it, acknowledged writes fail with :class:`HistorianError` (the edge sends
again). A connection found lost before COMMIT was sent (the server restarted while the
writer was idle) is opened again and the commit tried once more. A connection lost
during COMMIT hides whether the commit happened: its writes fail, and the next commit
opens a new connection, takes the writer lock again and reloads the catalog, the last
values and the ledger's index from the database, so a batch that was in fact stored is
answered as a duplicate when the edge sends it again: exactly once either way.

With ``shared`` several processes write the same schema (ingest workers scaled out):
commits are serialised by a transaction lock and duplicates are decided by the ledger
table instead of memory; see :mod:`~shopfloor.server.historian.pg_shared`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import psycopg
import pyarrow as pa

from shopfloor.errors import HistorianError, ShutdownError
from shopfloor.model import PointBatch, TagMeta
from shopfloor.server.historian import pg_blocks, pg_feed, pg_schema, pg_shared, schema
from shopfloor.server.historian.base import EdgeLedgerStats, WriteReceipt
from shopfloor.server.historian.commit_plan import (
    CommitPlan,
    PendingWrites,
    SortedRows,
    WriteBatch,
    answer,
    coalesce,
    plan_commit,
)
from shopfloor.server.historian.ledger import BUCKET_NS, Ledger
from shopfloor.server.historian.pg_feed import FeedRoute
from shopfloor.server.historian.pg_shared import Applied
from shopfloor.server.historian.snapshot import LatestValues, Snapshot, TagCatalog

logger = logging.getLogger(__name__)


# --------------------------------------------------------------------------- messages
@dataclass(slots=True)
class AckWrite:
    """A batch from an edge, stored once per ``(edge, seq)``; ``done`` resolves after commit."""

    batch: PointBatch
    edge: str
    seq: int
    accepted: float
    done: asyncio.Future[WriteReceipt] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


@dataclass(slots=True)
class Flush:
    """Commit everything queued before this message, then resolve ``done``."""

    done: asyncio.Future[None] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


@dataclass(slots=True)
class Register:
    """Create or update tag metadata, then resolve ``done``."""

    metas: tuple[TagMeta, ...]
    done: asyncio.Future[None] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


@dataclass(slots=True)
class PruneLedger:
    """Age the ledger's marks and delete old ledger rows now; ``done`` gets the count."""

    done: asyncio.Future[int] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


@dataclass(slots=True)
class Stop:
    """Commit everything queued and close the connection."""


Message = WriteBatch | AckWrite | Flush | Register | PruneLedger | Stop
Write = WriteBatch | AckWrite


_COMMIT_ERRORS = (psycopg.Error, HistorianError, pa.ArrowException, ValueError)
_SHARED_REFRESH_S = 1.0
"""Shared mode: how often an idle writer reads the tags and last values others stored."""
_LOCK_RETRIES, _LOCK_RETRY_S = 20, 0.1
"""A writer lock still held at open is tried again for up to 2 s before it is refused."""
"""What a failed commit raises; it fails the commit's writes, never the writer."""


def _resolve(
    done: asyncio.Future[Any], result: Any = None, error: BaseException | None = None
) -> None:
    """Answer a waiter unless it gave up (a cancelled caller cancels its future)."""
    if done.done():
        return
    if error is not None:
        done.set_exception(error)
    else:
        done.set_result(result)


def _resolve_ack(ack: AckWrite, outcome: WriteReceipt | BaseException) -> None:
    """Answer a waiting edge batch, unless its caller gave up."""
    if isinstance(outcome, BaseException):
        _resolve(ack.done, error=outcome)
    else:
        _resolve(ack.done, outcome)


class PgWriter:
    """Owns the write connection and the task that uses it.

    Args:
        connect: opens a new connection (autocommit, search path set).
        schema_name: the historian's schema (for the writer lock).
        flush_interval_s: commit when the oldest pending batch is this old.
        flush_rows: commit as soon as this many rows are pending.
        on_released: called with a row count whenever rows stop being pending.
        ledger: the ingest ledger's index (rebuilt from the tables on open).
        ack_delay_s: the longest an acknowledged write waits for company before commit.
        prune_interval_s: how often the ledger's marks are aged and old rows deleted.
        clock: the wall clock in UTC nanoseconds.
        timescale: use TimescaleDB for a new schema (None: when it is available).
        shared: other processes write the same schema (see :mod:`.pg_shared`).
        feed: shared mode: copy the points this route asks for into the committed-points
            feed, in each commit's transaction (see :mod:`.pg_feed`).
    """

    def __init__(
        self,
        connect: Callable[[], Any],
        *,
        schema_name: str,
        flush_interval_s: float,
        flush_rows: int,
        on_released: Callable[[int], None],
        ledger: Ledger,
        ack_delay_s: float,
        prune_interval_s: float,
        clock: Callable[[], int],
        timescale: bool | None,
        shared: bool = False,
        feed: FeedRoute | None = None,
    ) -> None:
        if feed is not None and not shared:
            raise ValueError("a committed-points feed needs a shared historian")
        self._connect = connect
        self.shared = shared
        self._feed = feed
        self.feed_bound = pg_feed.FeedBound()
        self._next_refresh = 0.0
        self._timescale = timescale
        self.layout: pg_schema.Layout = "partitioned"
        self._schema = schema_name
        self._on_released = on_released
        self._ledger = ledger
        self._prune_interval_s = prune_interval_s
        self._next_prune = 0.0
        self._clock = clock
        self._queue: asyncio.Queue[Message] = asyncio.Queue()
        self._accepting = False
        self._con: psycopg.AsyncConnection[Any] | None = None
        self._partitions: set[int] | None = None
        self._pending: PendingWrites[AckWrite] = PendingWrites(
            flush_interval_s=flush_interval_s, flush_rows=flush_rows, ack_delay_s=ack_delay_s
        )
        self._held: Message | None = None
        self._failure: BaseException | None = None
        self._failing = False
        self._commit_sent = False
        self._task: asyncio.Task[None] | None = None
        self.snapshot = Snapshot(TagCatalog({}, {}), LatestValues.empty(1))
        self.points_written = 0
        self.points_dropped = 0
        self.flushes = 0
        self.last_flush_ms = 0.0
        self.ledger_rows_pruned = 0

    @property
    def ledger_snapshot(self) -> Mapping[str, EdgeLedgerStats]:
        """Per edge, the ledger's committed state (an immutable mapping, swapped whole)."""
        return self._ledger.snapshot

    @property
    def task(self) -> asyncio.Task[None] | None:
        """The writer task once started."""
        return self._task

    # ------------------------------------------------------------------ lifecycle
    async def open(self) -> None:
        """Connect, take the writer lock, create the schema and load what readers see.

        Raises:
            HistorianError: the database cannot be reached or set up, or another
                historian writes to the same schema.
        """
        con = await self._open_connection()
        try:
            if self.shared:  # one at a time: workers started together race in CREATE
                await pg_shared.lock_setup(con, self._schema)
            opened = await pg_schema.open_schema(con, self._schema, timescale=self._timescale)
            if self._feed is not None:
                for statement in pg_feed.FEED_TABLES:
                    await con.execute(statement)
            self.layout = opened.layout
            self._partitions = opened.partitions if opened.layout == "partitioned" else None
            await self._load(con)
            today = self._clock() // pg_schema.DAY_NS
            await self._ensure_partitions(con, {today, today + 1})
            if self.shared:
                await pg_shared.unlock_setup(con, self._schema)
        except psycopg.Error as err:
            await con.close()
            raise HistorianError(f"cannot set up the historian in PostgreSQL: {err}") from err
        except BaseException:
            await con.close()
            raise
        self._con = con

    async def _open_connection(self) -> psycopg.AsyncConnection[Any]:
        try:
            con: psycopg.AsyncConnection[Any] = await self._connect()
        except psycopg.Error as err:
            raise HistorianError(f"cannot connect to the historian database: {err}") from err
        try:
            # an answered write must survive a server crash, whatever the server's default
            await con.execute("SET synchronous_commit TO on")
            take = pg_shared.take_shared_lock if self.shared else pg_schema.take_writer_lock
            locked = await take(con, self._schema)
            for _ in range(_LOCK_RETRIES):  # a writer that just went away may still hold it
                if locked:
                    break
                await asyncio.sleep(_LOCK_RETRY_S)
                locked = await take(con, self._schema)
        except psycopg.Error as err:
            await con.close()
            raise HistorianError(f"cannot take the historian writer lock: {err}") from err
        if not locked:
            await con.close()
            if self.shared:
                raise HistorianError(
                    f"a historian with historian.shared = false writes to schema "
                    f"{self._schema} of this database; every process writing it needs "
                    "historian.shared = true"
                )
            raise HistorianError(
                f"another historian already writes to schema {self._schema} of this database "
                "(several processes writing one schema need historian.shared = true in each)"
            )
        return con

    async def _load(self, con: psycopg.AsyncConnection[Any]) -> None:
        ids: dict[str, int] = {}
        metas: dict[str, TagMeta] = {}
        cur = await con.execute(
            "SELECT id, path, unit, description, data_type, eng_low, eng_high, states FROM tags"
        )
        for row in await cur.fetchall():
            tag_id, meta = schema.row_to_meta(row)
            ids[meta.path] = tag_id
            metas[meta.path] = meta
        catalog = TagCatalog(ids, metas)
        latest = LatestValues.empty(catalog.next_id)
        cur = await con.execute("SELECT tag_id, ts, value, quality, text FROM latest")
        rows = await cur.fetchall()
        if rows:
            tid, ts, value, quality, text = zip(*rows, strict=True)
            index = np.asarray(tid, dtype=np.int64)
            latest.has[index] = True
            latest.ts[index] = np.asarray(ts, dtype=np.int64)
            latest.value[index] = np.asarray(value, dtype=np.float64)
            latest.quality[index] = np.asarray(quality, dtype=np.int64).astype(np.uint32)
            latest.text[index] = np.asarray(text, dtype=object)
        self.snapshot = Snapshot(catalog, latest)
        now = self._clock()
        ledger = await pg_schema.load_ledger(
            con, cutoff_ns=self._ledger.cutoff(now), bucket_ns=BUCKET_NS
        )
        self._ledger.load(
            now,
            low_water=ledger.low_water,
            expired=ledger.expired,
            ranges=ledger.ranges,
            buckets=ledger.buckets,
        )
        logger.info(
            "historian opened PostgreSQL schema %s (%s) with %d tags and %d edges in the "
            "ingest ledger",
            self._schema,
            self.layout,
            len(ids),
            len(self._ledger.edges),
        )

    def start(self) -> None:
        """Start the writer task (after :meth:`open`)."""
        self._accepting = True
        self._task = asyncio.create_task(self._run(), name="historian-pg-writer")

    def submit(self, message: Message) -> None:
        """Queue ``message`` for the writer.

        Raises:
            ShutdownError: the writer has stopped.
        """
        if not self._accepting:
            raise ShutdownError("the historian writer has stopped")
        self._queue.put_nowait(message)

    # -------------------------------------------------------------------- the task
    async def _run(self) -> None:
        try:
            await self._serve()
        except Exception as err:  # the task's supervisor: log, then fail every waiter
            logger.exception("historian writer crashed")
            self._failure = err
        finally:
            await self._shut_down()

    async def _serve(self) -> None:
        await self._prune_now()
        while True:
            message = self._held
            self._held = None
            if message is None:
                wait_s = self._pending.wait_s()
                if self.shared and not self._pending:
                    wait_s = max(0.0, self._next_refresh - time.monotonic())
                message = await self._next(wait_s)
                if message is None:
                    if self._pending:
                        await self._commit_pending()
                    elif self.shared:
                        await self._refresh_or_log()
                    continue
            if isinstance(message, WriteBatch | AckWrite):
                self._pending.add(message)
                if self._pending.full:
                    await self._commit_pending()
                elif self._pending.wait_s() == 0.0:
                    self._take_queued()
                    await self._commit_pending()
            elif isinstance(message, Flush):
                self._take_queued()
                await self._commit_pending()
                self._report(message.done)
            elif isinstance(message, Register):
                await self._register_or_report(message)
            elif isinstance(message, PruneLedger):
                await self._prune_or_report(message.done)
            else:
                await self._commit_pending()
                return
            if time.monotonic() >= self._next_prune:
                await self._prune_now()

    async def _next(self, wait_s: float | None) -> Message | None:
        """The next message, or None when ``wait_s`` passed first (None: wait for one)."""
        if wait_s is None:
            return await self._queue.get()
        if wait_s > 0:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait_s):
                    return await self._queue.get()
            return None
        try:
            return self._queue.get_nowait()
        except asyncio.QueueEmpty:
            return None

    def _take_queued(self) -> None:
        """Move writes already queued into the pending commit, up to ``flush_rows``.

        Stops at the first other message, which is kept to be handled next.
        """
        while not self._pending.full:
            try:
                message = self._queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            if not isinstance(message, WriteBatch | AckWrite):
                self._held = message
                return
            self._pending.add(message)

    def _report(self, done: asyncio.Future[None]) -> None:
        """Resolve a flush: fail it if a commit failed since the previous flush."""
        failure, self._failure = self._failure, None
        if failure is None:
            _resolve(done)
        else:
            err = HistorianError(f"points were not committed: {failure}")
            err.__cause__ = failure
            _resolve(done, error=err)

    async def _shut_down(self) -> None:
        self._accepting = False
        if self._held is not None:
            self._queue.put_nowait(self._held)
            self._held = None
        pending, lost = self._pending.take()
        leftover: list[Message] = list(pending)
        while not self._queue.empty():
            message = self._queue.get_nowait()
            if isinstance(message, WriteBatch | AckWrite):
                lost += len(message.batch)
            leftover.append(message)
        for message in leftover:
            if isinstance(message, AckWrite | Flush | Register | PruneLedger):
                _resolve(message.done, error=HistorianError("the historian writer has stopped"))
        if lost:
            logger.error("historian writer stopped with %d points not committed", lost)
            self.points_dropped += lost
            self._on_released(lost)
        con, self._con = self._con, None
        if con is not None:
            try:
                # Released on the server before close returns: a backend exits (and lets
                # go of its session locks) only some time after its client hung up, and a
                # historian opened right after this one must not find the lock still held.
                if not con.closed:
                    release = (
                        pg_shared.release_shared_lock
                        if self.shared
                        else pg_schema.release_writer_lock
                    )
                    await release(con, self._schema)
                await con.close()
            except psycopg.Error:
                logger.exception("closing the historian connection failed")

    def failure(self) -> HistorianError | None:
        """The failure the last flush did not report yet, as a HistorianError (for close)."""
        if self._failure is None:
            return None
        err = HistorianError(f"points were not committed: {self._failure}")
        err.__cause__ = self._failure
        return err

    # ------------------------------------------------------------------ connection
    async def _connection(self) -> psycopg.AsyncConnection[Any]:
        """The write connection; opened again if it was lost.

        After a loss the writer lock is taken again and the catalog, the last values and
        the ledger's index are loaded again from the database, as at start: a commit
        whose outcome the lost connection hid is then known as it really ended, and a
        batch it did store is a duplicate when the edge sends it again.
        """
        con = self._con
        if con is not None and not con.closed:
            return con
        self._con = None
        if con is not None:
            logger.warning("historian connection to PostgreSQL lost: connecting again")
        con = await self._open_connection()
        try:
            await pg_schema.set_search_path(con, self._schema)
            await self._load(con)
            if self._partitions is not None:
                self._partitions = await pg_schema.known_partitions(con)
        except psycopg.Error as err:
            await con.close()
            raise HistorianError(f"cannot set up the historian connection: {err}") from err
        self._con = con
        return con

    def _lost_before_commit(self) -> bool:
        """Whether the connection broke before COMMIT was sent: nothing of it was stored."""
        con = self._con
        return (con is None or con.closed) and not self._commit_sent

    async def _ensure_partitions(self, con: psycopg.AsyncConnection[Any], days: set[int]) -> None:
        if self._partitions is None:
            return
        missing = sorted(days - self._partitions)
        if not missing:
            return
        await pg_schema.create_partitions(con, missing, self._partitions)
        logger.info(
            "historian: created %d daily partition(s) %s",
            len(missing),
            ", ".join(pg_schema.partition_name(d) for d in missing[:5]),
        )

    # ------------------------------------------------------------------- committing
    async def _commit_pending(self) -> None:
        if not self._pending:
            return
        writes, rows = self._pending.take()
        started = time.perf_counter()
        plan: CommitPlan[AckWrite] | None = None
        try:
            for attempt in (1, 2):
                try:
                    # connect (and reload after a loss) before planning: the ledger's
                    # index must be the database's before it decides what is a duplicate
                    con = await self._connection()
                    plan = await self._commit(con, writes)
                    break
                except _COMMIT_ERRORS:
                    if attempt == 1 and self._lost_before_commit():
                        continue  # a connection lost while idle: once more on a new one
                    raise
        except _COMMIT_ERRORS as err:
            plan = plan or self._plan(writes)
            if not self._failing:
                self._failing = True
                logger.error("historian commit of %d points failed: %s", plan.stored_rows, err)
            if plan.plain_rows:  # acknowledged writes hear of it from their own answers
                self._failure = err
            self.points_dropped += plan.stored_rows
            self._answer(plan, err)
        else:
            assert plan is not None
            if self._failing:
                self._failing = False
                logger.info("historian commits work again")
            self.points_written += plan.stored_rows
            self.flushes += 1
            self.last_flush_ms = (time.perf_counter() - started) * 1000.0
            self._answer(plan, None)
        finally:
            self._on_released(rows)

    def _plan(self, writes: list[Write]) -> CommitPlan[AckWrite]:
        # shared: memory knows only this writer's commits, and may count a gap it gave up
        # on as applied; for answering a failed commit, nothing counts as applied then
        return plan_commit(writes, Applied() if self.shared else self._ledger, self._clock())

    def _answer(self, plan: CommitPlan[AckWrite], failure: BaseException | None) -> None:
        answer(plan, failure, self._ledger, _resolve_ack)

    async def _commit(
        self, con: psycopg.AsyncConnection[Any], writes: list[Write]
    ) -> CommitPlan[AckWrite]:
        """Store the points, their tags, the last values and the ledger rows in one
        transaction; return the plan it followed."""
        self._commit_sent = False
        if self.shared:
            return await self._commit_shared(con, writes)
        plan = self._plan(writes)
        rows = self._coalesce(plan.batches) if plan.batches else None
        if rows is not None and len(rows.ts):
            await self._ensure_partitions(con, pg_schema.days_of(rows.ts))
        snapshot = await self._store(con, plan, rows)
        if snapshot is not None:
            self.snapshot = snapshot
        return plan

    async def _commit_shared(
        self, con: psycopg.AsyncConnection[Any], writes: list[Write]
    ) -> CommitPlan[AckWrite]:
        """:meth:`_commit` beside other writers: under the commit lock, with the tags they
        created and the ledger table's answer for this commit's batches."""
        async with con.transaction():
            await pg_shared.lock_commits(con, self._schema)
            await self._catch_up_tags(con)
            keys = [(w.edge, w.seq) for w in writes if isinstance(w, AckWrite)]
            plan = plan_commit(writes, await pg_shared.applied(con, keys), self._clock())
            rows = self._coalesce(plan.batches) if plan.batches else None
            if rows is not None and len(rows.ts):
                await self._ensure_partitions(con, pg_schema.days_of(rows.ts))
            snapshot = await self._store(con, plan, rows)  # a savepoint inside this transaction
            if self._feed is not None and plan.batches:
                ids = (snapshot or self.snapshot).catalog.ids
                points = pg_feed.feed_rows(plan.batches, self._feed, ids)
                await pg_feed.write_feed(con, points, self.feed_bound)
            self._commit_sent = True  # leaving the block sends COMMIT: outcome unknown if lost
        if snapshot is not None:  # only once committed: its new tag ids are others' to see
            self.snapshot = snapshot
        return plan

    async def _store(
        self,
        con: psycopg.AsyncConnection[Any],
        plan: CommitPlan[AckWrite],
        rows: SortedRows | None,
    ) -> Snapshot | None:
        """Store the points, their tags, the last values and the ledger rows in one
        transaction; return the snapshot to publish once the outermost one committed."""
        snapshot = None
        async with con.transaction():
            if rows is not None and len(rows.ts):
                snapshot = await self._store_points(con, rows)
            if plan.applied:
                edges, seqs, points = (list(c) for c in zip(*plan.applied, strict=True))
                await con.execute(
                    pg_schema.INSERT_LEDGER, [edges, seqs, points, [plan.commit_ns] * len(edges)]
                )
            self._commit_sent = True  # leaving the block sends COMMIT: outcome unknown if lost
        return snapshot

    async def _store_points(self, con: psycopg.AsyncConnection[Any], rows: SortedRows) -> Snapshot:
        """Run the statements that store ``rows``; return the snapshot after them."""
        snap = self.snapshot
        new_metas = {path: TagMeta(path) for path in rows.new_ids}
        catalog = snap.catalog.with_tags(rows.new_ids, new_metas) if rows.new_ids else snap.catalog
        if rows.new_ids:
            await con.execute(
                pg_schema.UPSERT_TAGS,
                pg_schema.tags_params([(i, new_metas[p]) for p, i in rows.new_ids.items()]),
            )
        if self.layout == "blocks":  # a row per tag and hour of this commit (pg_blocks.py)
            copy_sql = pg_blocks.COPY_RECENT
            stream = pg_blocks.encode_segments(
                rows.tag_id, rows.ts, rows.value, rows.quality, rows.text
            )
        else:
            copy_sql = pg_schema.COPY_POINTS
            stream = pg_schema.encode_points(
                rows.ts, rows.value, rows.tag_id, rows.quality, rows.text
            )
        async with con.cursor() as cur, cur.copy(copy_sql) as copy:
            await copy.write(stream)
        # the last row of each tag in the sorted rows; keep those newer than stored
        last = np.flatnonzero(np.r_[rows.tag_id[1:] != rows.tag_id[:-1], True])
        latest = snap.latest.grown(catalog.next_id)
        last = last[latest.newer(rows.tag_id[last], rows.ts[last])]
        ids = rows.tag_id[last]
        texts: list[str | None] = (
            rows.text.take(pa.array(last)).to_pylist()
            if rows.text is not None
            else [None] * len(last)
        )
        if len(ids):
            await con.execute(
                pg_shared.UPSERT_LATEST_NEWER if self.shared else pg_schema.UPSERT_LATEST,
                [
                    ids.tolist(),
                    rows.ts[last].tolist(),
                    rows.value[last].tolist(),
                    rows.quality[last].view(np.int32).tolist(),
                    texts,
                ],
            )
        latest.has[ids] = True
        latest.ts[ids] = rows.ts[last]
        latest.value[ids] = rows.value[last]
        latest.quality[ids] = rows.quality[last]
        latest.text[ids] = np.asarray(texts, dtype=object)
        return Snapshot(catalog, latest)

    def _coalesce(self, batches: Iterable[PointBatch]) -> SortedRows:
        return coalesce(batches, self.snapshot.catalog)

    # -------------------------------------------------------------- tags and ledger
    async def _register_or_report(self, message: Register) -> None:
        try:
            await self._register(message.metas)
        except (psycopg.Error, HistorianError) as err:
            failure = HistorianError(f"cannot register tags: {err}")
            failure.__cause__ = err
            _resolve(message.done, error=failure)
        else:
            _resolve(message.done)

    async def _register(self, metas: tuple[TagMeta, ...]) -> None:
        con = await self._connection()
        if not self.shared:
            await self._register_on(con, metas)
            return
        async with con.transaction():
            await pg_shared.lock_commits(con, self._schema)
            await self._catch_up_tags(con)
            await self._register_on(con, metas)

    async def _register_on(
        self, con: psycopg.AsyncConnection[Any], metas: tuple[TagMeta, ...]
    ) -> None:
        snap = self.snapshot
        by_path = {m.path: m for m in metas}
        next_id = snap.catalog.next_id
        new_ids: dict[str, int] = {}
        rows: list[tuple[int, TagMeta]] = []
        for path, meta in by_path.items():
            tag_id = snap.catalog.ids.get(path)
            if tag_id is None:
                tag_id = new_ids[path] = next_id
                next_id += 1
            rows.append((tag_id, meta))
        await con.execute(pg_schema.UPSERT_TAGS, pg_schema.tags_params(rows))
        catalog = snap.catalog.with_tags(new_ids, by_path)
        self.snapshot = Snapshot(catalog, snap.latest.grown(catalog.next_id))

    async def _prune_now(self) -> None:
        """Age the ledger's marks and delete old rows; a failure is logged, not fatal."""
        try:
            await self._prune()
        except (psycopg.Error, HistorianError):
            logger.exception("pruning the ingest ledger failed; trying again later")

    async def _prune_or_report(self, done: asyncio.Future[int]) -> None:
        try:
            deleted = await self._prune()
        except (psycopg.Error, HistorianError) as err:
            failure = HistorianError(f"cannot prune the ingest ledger: {err}")
            failure.__cause__ = err
            _resolve(done, error=failure)
        else:
            _resolve(done, deleted)

    async def _prune(self) -> int:
        self._next_prune = time.monotonic() + self._prune_interval_s
        now = self._clock()
        self._ledger.expire(now)
        if self.shared:
            con = await self._connection()
            deleted = await pg_shared.prune(con, self._schema, cutoff_ns=self._ledger.cutoff(now))
            self.ledger_rows_pruned += deleted
            return deleted
        marks = [(edge, seqs.floor) for edge, seqs in self._ledger.edges.items() if seqs.floor]
        if not marks:
            return 0
        con = await self._connection()
        deleted = await pg_schema.prune_ledger(con, marks, cutoff_ns=self._ledger.cutoff(now))
        for edge, mark in marks:
            self._ledger.edges[edge].persisted_floor = mark
        self.ledger_rows_pruned += deleted
        if deleted:
            logger.info("ingest ledger: deleted %d rows past retention", deleted)
        return deleted

    # ------------------------------------------------------------------- shared mode
    async def _catch_up_tags(self, con: psycopg.AsyncConnection[Any]) -> None:
        """Add the tags other writers created to the catalog (call it under the lock)."""
        rows = await pg_shared.new_tags(con, self.snapshot.catalog.next_id)
        if not rows:
            return
        ids: dict[str, int] = {}
        metas: dict[str, TagMeta] = {}
        for row in rows:
            tag_id, meta = schema.row_to_meta(row)
            ids[meta.path] = tag_id
            metas[meta.path] = meta
        snap = self.snapshot
        catalog = snap.catalog.with_tags(ids, metas)
        self.snapshot = Snapshot(catalog, snap.latest.grown(catalog.next_id))

    async def _refresh_or_log(self) -> None:
        """Shared mode, idle: read the tags and last values the other writers stored, so
        that reads served by this process (an API server beside ingest workers) see them."""
        self._next_refresh = time.monotonic() + _SHARED_REFRESH_S
        try:
            con = await self._connection()
            await self._catch_up_tags(con)
            cur = await con.execute("SELECT tag_id, ts, value, quality, text FROM latest")
            rows = await cur.fetchall()
        except (psycopg.Error, HistorianError) as err:
            logger.debug("historian: refreshing from the other writers failed: %s", err)
            return
        snap = self.snapshot
        latest = LatestValues.empty(snap.catalog.next_id)
        if rows:
            tid, ts, value, quality, text = zip(*rows, strict=True)
            index = np.asarray(tid, dtype=np.int64)
            keep = index < len(latest.has)  # a tag created since the catch-up: next time
            index = index[keep]
            latest.has[index] = True
            latest.ts[index] = np.asarray(ts, dtype=np.int64)[keep]
            latest.value[index] = np.asarray(value, dtype=np.float64)[keep]
            latest.quality[index] = np.asarray(quality, dtype=np.int64)[keep].astype(np.uint32)
            latest.text[index] = np.asarray(text, dtype=object)[keep]
        self.snapshot = Snapshot(snap.catalog, latest)
