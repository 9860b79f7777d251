"""The one thread that writes to the DuckDB historian.

Home Assistant's recorder pattern: a single thread owns the write connection and works
through a queue of messages, so DuckDB never sees two writers and the event loop never
waits on a disk. Batches are coalesced and committed in one columnar ``INSERT ... SELECT``
from an Arrow table when ``flush_rows`` are pending or the oldest pending batch is
``flush_interval_s`` old, whichever comes first.

Acknowledged writes (an edge waits for the answer, :class:`AckWrite`) are group-committed:
as soon as one is pending, the writer takes everything already queued into one commit and
commits it, at most ``ack_delay_s`` later, instead of waiting for ``flush_interval_s``.
Whatever queues up while that commit runs goes into the next one. Each such batch's
``(edge, seq)`` goes into ``ingest_ledger`` in the same transaction as its points; a batch
whose ``(edge, seq)`` is applied already (committed before, or earlier in the same
commit) stores nothing and is answered as a duplicate. Its answer is resolved only after
the commit returned, and a failed commit fails every write that waited on it.

What readers may look at without touching DuckDB (the tag catalog and the last value of
every tag) is kept in an immutable :class:`~.snapshot.Snapshot` that the writer replaces,
in one assignment, only after DuckDB's commit returned. Readers therefore never see
uncommitted tags or values, and never a half-updated snapshot.

Each commit records the ``(day, tag)`` pairs it wrote to for the first time in
``compaction_todo``, in its own transaction; compaction
(:mod:`~shopfloor.server.historian.compaction`) rewrites them on a worker thread beside
this one and hands its bookkeeping back through this queue.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa

from shopfloor.errors import HistorianError, ShutdownError
from shopfloor.model import PointBatch, TagMeta
from shopfloor.model.points import Float64Array, Int32Array, Int64Array, UInt32Array
from shopfloor.server.historian import compaction, duckdb_rollup, schema
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
from shopfloor.server.historian.rollup import RollupSettings
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
    done: Future[WriteReceipt] = field(default_factory=Future)


@dataclass(slots=True)
class Flush:
    """Commit everything queued before this message, then resolve ``done``."""

    done: Future[None] = field(default_factory=Future)


@dataclass(slots=True)
class Register:
    """Create or update tag metadata, then resolve ``done``."""

    metas: tuple[TagMeta, ...]
    done: Future[None] = field(default_factory=Future)


@dataclass(slots=True)
class PruneLedger:
    """Age the ledger's marks and delete old ledger rows now; ``done`` gets the count."""

    done: Future[int] = field(default_factory=Future)


@dataclass(slots=True)
class Compact:
    """Compact every closed day now; ``done`` gets the pass's report."""

    done: Future[compaction.CompactionReport] = field(default_factory=Future)


@dataclass(slots=True)
class Stop:
    """Commit everything queued, checkpoint and close the database."""


Message = (
    WriteBatch
    | AckWrite
    | Flush
    | Register
    | PruneLedger
    | Compact
    | compaction.ChunkDone
    | compaction.PassDone
    | Stop
)
Write = WriteBatch | AckWrite


def _resolve_ack(ack: AckWrite, outcome: WriteReceipt | BaseException) -> None:
    """Answer a waiting edge batch, unless its caller gave up (the ledger still has it)."""
    if not ack.done.set_running_or_notify_cancel():
        return
    if isinstance(outcome, BaseException):
        ack.done.set_exception(outcome)
    else:
        ack.done.set_result(outcome)


# ---------------------------------------------------------------------------- writer
class Writer:
    """Owns the DuckDB connection and the thread that uses it.

    Args:
        path: the database file, or None for an in-memory database.
        flush_interval_s: commit when the oldest pending batch is this old.
        flush_rows: commit as soon as this many rows are pending.
        memory_limit: DuckDB's ``memory_limit`` setting.
        on_released: called on the writer thread with a row count whenever rows stop
            being pending (committed or, after a failed commit, dropped).
        ledger: the ingest ledger's index (rebuilt from the tables on open).
        ack_delay_s: the longest an acknowledged write waits for company before commit.
        prune_interval_s: how often the ledger's marks are aged and old rows deleted.
        clock: the wall clock in UTC nanoseconds (``committed_at``, retention).
        compaction_interval_s: how often to look for closed days to compact (None: only
            when asked, by :class:`Compact`).
        compaction_grace_s: a day is closed this long after it ended (late points).
        compaction_chunk_rows: the most points one compaction transaction rewrites.
        rollups: whether and how often the compaction worker refreshes the rollups.
    """

    def __init__(
        self,
        path: Path | None,
        *,
        flush_interval_s: float,
        flush_rows: int,
        memory_limit: str,
        on_released: Callable[[int], None],
        ledger: Ledger,
        ack_delay_s: float,
        prune_interval_s: float,
        clock: Callable[[], int],
        compaction_interval_s: float | None = 600.0,
        compaction_grace_s: float = 600.0,
        compaction_chunk_rows: int = 1_000_000,
        rollups: RollupSettings | None = None,
    ) -> None:
        self._path = path
        self._memory_limit = memory_limit
        self._on_released = on_released
        self._ledger = ledger
        self._prune_interval_s = prune_interval_s
        self._next_prune = 0.0
        self._clock = clock
        self._compactor = compaction.Compactor(
            interval_s=compaction_interval_s,
            grace_ns=int(compaction_grace_s * 1e9),
            chunk_rows=compaction_chunk_rows,
            clock=clock,
            post=self.submit,
            rollups=rollups,
        )
        # a rollup step's numpy arrays live outside DuckDB's memory limit: scale them by it
        self._compactor.rollup_chunk_rows = duckdb_rollup.step_points(
            memory_limit, compaction_chunk_rows
        )
        self._todo_touched: list[tuple[int, int]] = []  # pairs of the commit in progress
        self._queue: queue.SimpleQueue[Message] = queue.SimpleQueue()
        self._accepting = False
        self._submit_lock = threading.Lock()
        self._cursor_lock = threading.Lock()
        self._con: duckdb.DuckDBPyConnection | None = None
        self._read_root: duckdb.DuckDBPyConnection | None = None
        self._pending: PendingWrites[AckWrite] = PendingWrites(
            flush_interval_s=flush_interval_s, flush_rows=flush_rows, ack_delay_s=ack_delay_s
        )
        self._held: Message | None = None
        self._failure: BaseException | None = None  # reported by the next flush
        self._failing = False  # for logging the transitions only
        self._thread: threading.Thread | None = None
        self.ready: Future[None] = Future()
        self.stopped: Future[None] = Future()
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

    # ------------------------------------------------------------ called from the loop
    @property
    def compaction_totals(self) -> compaction.CompactionTotals:
        """What compaction and rollups wrote since start."""
        return self._compactor.totals

    @property
    def thread(self) -> threading.Thread | None:
        """The writer thread once started (joined by the historian's close)."""
        return self._thread

    def start(self) -> None:
        """Start the thread; :attr:`ready` resolves once the database is open."""
        self._accepting = True
        self._thread = threading.Thread(target=self._run, name="historian-writer", daemon=True)
        self._thread.start()

    def submit(self, message: Message) -> None:
        """Queue ``message`` for the writer thread.

        Raises:
            ShutdownError: the writer has stopped.
        """
        with self._submit_lock:
            if not self._accepting:
                raise ShutdownError("the historian writer has stopped")
            self._queue.put(message)

    def new_cursor(self) -> duckdb.DuckDBPyConnection:
        """Return a new connection to the same database for a reader thread."""
        with self._cursor_lock:
            if self._read_root is None:
                raise ShutdownError("the historian database is closed")
            try:
                return self._read_root.cursor()
            except duckdb.Error as err:
                raise HistorianError(f"cannot open a read cursor: {err}") from err

    # ------------------------------------------------------------- the writer thread
    def _run(self) -> None:
        try:
            try:
                self._open()
            except (duckdb.Error, OSError, ValueError) as err:
                where = self._path or ":memory:"
                failure = HistorianError(f"cannot open historian {where}: {err}")
                failure.__cause__ = err
                if self.ready.set_running_or_notify_cancel():
                    self.ready.set_exception(failure)
                return
            if not self.ready.set_running_or_notify_cancel():
                return  # start() was cancelled: nobody will use this database
            self.ready.set_result(None)
            self._serve()
        except Exception as err:  # the thread's supervisor: log, then fail every waiter
            logger.exception("historian writer crashed")
            self._failure = err
        finally:
            self._shut_down()

    def _open(self) -> None:
        if self._path is None:
            database = ":memory:"
        else:
            self._path.parent.mkdir(parents=True, exist_ok=True)
            database = str(self._path)
        con = duckdb.connect(database, config={"memory_limit": self._memory_limit})
        self._con = con
        had_todo = compaction.has_todo_table(con)
        schema.create(con)
        self._compactor.open(con, seed=not had_todo, checkpoints=self._path is not None)
        ids: dict[str, int] = {}
        metas: dict[str, TagMeta] = {}
        for row in con.execute("SELECT * FROM tags").fetchall():
            tag_id, meta = schema.row_to_meta(row)
            ids[meta.path] = tag_id
            metas[meta.path] = meta
        catalog = TagCatalog(ids, metas)
        latest = LatestValues.empty(catalog.next_id)
        stored = schema.fetch_arrow(con, "SELECT * FROM latest", [])
        if stored.num_rows:
            tid = stored.column("tag_id").to_numpy()
            latest.has[tid] = True
            latest.ts[tid] = stored.column("ts").to_numpy()
            latest.value[tid] = stored.column("value").to_numpy()
            latest.quality[tid] = stored.column("quality").to_numpy()
            latest.text[tid] = stored.column("text").to_numpy(zero_copy_only=False)
        self.snapshot = Snapshot(catalog, latest)
        now = self._clock()
        rows = schema.load_ledger(con, cutoff_ns=self._ledger.cutoff(now), bucket_ns=BUCKET_NS)
        self._ledger.load(
            now,
            low_water=rows.low_water,
            expired=rows.expired,
            ranges=rows.ranges,
            buckets=rows.buckets,
        )
        with self._cursor_lock:
            self._read_root = con.cursor()
        logger.info(
            "historian opened %s with %d tags and %d edges in the ingest ledger",
            database,
            len(ids),
            len(self._ledger.edges),
        )

    def _serve(self) -> None:
        self._prune_now()
        self._compactor.start_timer()
        while True:
            message = self._held
            self._held = None
            if message is None:
                try:
                    message = self._queue.get(timeout=self._idle_wait_s())
                except queue.Empty:
                    self._idle()
                    continue
            if isinstance(message, WriteBatch | AckWrite):
                self._pending.add(message)
                if self._pending.full:
                    self._commit_pending()
                elif self._pending.wait_s() == 0.0:
                    # due (behind schedule, or an edge waits for its answer): take what is
                    # already queued into this commit rather than committing each batch
                    self._take_queued()
                    self._commit_pending()
            elif isinstance(message, Flush):
                self._take_queued()  # commits on the way are fine; fewer, larger ones
                self._commit_pending()
                if message.done.set_running_or_notify_cancel():
                    self._report(message.done)
            elif isinstance(message, Register):
                if message.done.set_running_or_notify_cancel():
                    self._register_or_report(message)
            elif isinstance(message, PruneLedger):
                if message.done.set_running_or_notify_cancel():
                    self._prune_or_report(message.done)
            elif isinstance(message, Compact):
                if message.done.set_running_or_notify_cancel():
                    self._compactor.request(message.done)
            elif isinstance(message, compaction.ChunkDone | compaction.PassDone):
                self._compactor.handle(message)
            else:
                self._commit_pending()
                return
            if time.monotonic() >= self._next_prune:
                self._prune_now()
            self._compactor.tick()

    def _idle_wait_s(self) -> float | None:
        """How long to wait for a message: until pending writes are due, or compaction."""
        wait, compact = self._pending.wait_s(), self._compactor.wait_s()
        if compact is None:
            return wait
        return compact if wait is None else min(wait, compact)

    def _idle(self) -> None:
        """No message came in time: commit what is due, start compaction if it is time."""
        self._compactor.tick()
        if self._pending.wait_s() == 0.0:
            self._commit_pending()

    def _take_queued(self) -> None:
        """Move batches already queued into the pending commit, up to ``flush_rows``.

        Stops at the first other message, which is kept to be handled next, so the
        order of messages is preserved.
        """
        while not self._pending.full:
            try:
                message = self._queue.get_nowait()
            except queue.Empty:
                return
            if not isinstance(message, WriteBatch | AckWrite):
                self._held = message
                return
            self._pending.add(message)

    def _report(self, done: Future[None]) -> None:
        """Resolve a flush: fail it if a commit failed since the previous flush."""
        failure, self._failure = self._failure, None
        if failure is None:
            done.set_result(None)
        else:
            err = HistorianError(f"points were not committed: {failure}")
            err.__cause__ = failure
            done.set_exception(err)

    def _register_or_report(self, message: Register) -> None:
        try:
            self._register(message.metas)
        except duckdb.Error as err:
            failure = HistorianError(f"cannot register tags: {err}")
            failure.__cause__ = err
            message.done.set_exception(failure)
        else:
            message.done.set_result(None)

    def _shut_down(self) -> None:
        with self._submit_lock:
            self._accepting = False
        if self._held is not None:
            self._queue.put(self._held)  # fail it below with the rest (order is moot now)
            self._held = None
        pending, lost = self._pending.take()
        leftover: list[Message] = list(pending)
        while True:
            try:
                message = self._queue.get_nowait()
            except queue.Empty:
                break
            if isinstance(message, WriteBatch | AckWrite):
                lost += len(message.batch)
            leftover.append(message)
        for message in leftover:
            if (
                isinstance(message, AckWrite | Flush | Register | PruneLedger | Compact)
                and message.done.set_running_or_notify_cancel()
            ):
                message.done.set_exception(HistorianError("the historian writer has stopped"))
        self._compactor.stop()  # before the connection closes: joins its worker
        if lost:
            logger.error("historian writer stopped with %d points not committed", lost)
            self.points_dropped += lost
            self._on_released(lost)
        failure = self._close_connection()
        if failure is None and self._failure is not None:
            failure = HistorianError(f"points were not committed: {self._failure}")
            failure.__cause__ = self._failure
        if failure is None:
            self.stopped.set_result(None)
        else:
            self.stopped.set_exception(failure)

    def _close_connection(self) -> HistorianError | None:
        with self._cursor_lock:
            root, self._read_root = self._read_root, None
        con, self._con = self._con, None
        try:
            if root is not None:
                root.close()
            if con is not None:
                if self._path is not None:
                    con.execute("CHECKPOINT")
                con.close()
        except duckdb.Error as err:
            logger.exception("closing the historian database failed")
            failure = HistorianError(f"closing the historian database failed: {err}")
            failure.__cause__ = err
            return failure
        return None

    # -------------------------------------------------------------------- committing
    def _commit_pending(self) -> None:
        if not self._pending:
            return
        writes, rows = self._pending.take()
        started = time.perf_counter()
        plan = self._plan(writes)
        try:
            self._commit(plan)
        except (duckdb.Error, pa.ArrowException, ValueError) as err:
            # a failed commit drops its points (flush reports it) instead of killing the
            # writer: the points are rolled back as a whole, and the caller resends
            if not self._failing:
                self._failing = True
                logger.error("historian commit of %d points failed: %s", plan.stored_rows, err)
            if plan.plain_rows:  # acknowledged writes hear of it from their own answers
                self._failure = err
            self.points_dropped += plan.stored_rows
            self._answer(plan, err)
        else:
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
        return plan_commit(writes, self._ledger, self._clock())

    def _answer(self, plan: CommitPlan[AckWrite], failure: BaseException | None) -> None:
        answer(plan, failure, self._ledger, _resolve_ack)

    def _prune_now(self) -> None:
        """Age the ledger's marks and delete old rows; a failure is logged, not fatal."""
        try:
            self._prune()
        except duckdb.Error:
            logger.exception("pruning the ingest ledger failed; trying again later")

    def _prune_or_report(self, done: Future[int]) -> None:
        try:
            deleted = self._prune()
        except duckdb.Error as err:
            failure = HistorianError(f"cannot prune the ingest ledger: {err}")
            failure.__cause__ = err
            done.set_exception(failure)
        else:
            done.set_result(deleted)

    def _prune(self) -> int:
        self._next_prune = time.monotonic() + self._prune_interval_s
        con = self._con
        assert con is not None
        now = self._clock()
        self._ledger.expire(now)
        marks = [(edge, seqs.floor) for edge, seqs in self._ledger.edges.items() if seqs.floor]
        if not marks:
            return 0
        deleted = schema.prune_ledger(con, marks, cutoff_ns=self._ledger.cutoff(now))
        for edge, mark in marks:
            self._ledger.edges[edge].persisted_floor = mark
        self.ledger_rows_pruned += deleted
        if deleted:
            logger.info("ingest ledger: deleted %d rows past retention", deleted)
        return deleted

    def _coalesce(self, batches: Iterable[PointBatch]) -> SortedRows:
        return coalesce(batches, self.snapshot.catalog)

    def _commit(self, plan: CommitPlan[AckWrite]) -> None:
        """Insert the points, update ``latest`` and add the ledger rows in one transaction."""
        con = self._con
        assert con is not None
        steps: list[tuple[str, str, pa.Table]] = []
        self._todo_touched = []
        snapshot = self._points_steps(plan.batches, steps) if plan.batches else None
        if plan.applied:
            steps.append(
                (
                    "INSERT INTO ingest_ledger SELECT * FROM _ledger_in",
                    "_ledger_in",
                    schema.ledger_table(plan.applied, plan.commit_ns),
                )
            )
        self._transaction(con, steps)
        if snapshot is not None:
            self.snapshot = snapshot
        self._compactor.commits += 1
        self._compactor.todo.touch(self._todo_touched, self._compactor.commits)

    def _points_steps(
        self, batches: list[PointBatch], steps: list[tuple[str, str, pa.Table]]
    ) -> Snapshot | None:
        """Append the statements that store ``batches``; return the snapshot after them.

        The snapshot is built beside the current one and installed only after the commit.
        """
        rows = self._coalesce(batches)
        if not len(rows.ts):
            return None
        snap = self.snapshot
        new_metas = {path: TagMeta(path) for path in rows.new_ids}
        catalog = snap.catalog.with_tags(rows.new_ids, new_metas) if rows.new_ids else None
        size = catalog.next_id if catalog is not None else snap.catalog.next_id
        # the last row of each tag in the sorted rows; keep the ones newer than stored
        last = np.flatnonzero(np.r_[rows.tag_id[1:] != rows.tag_id[:-1], True])
        latest = snap.latest.grown(size)
        last = last[latest.newer(rows.tag_id[last], rows.ts[last])]
        last_ids = rows.tag_id[last]
        known = latest.has[last_ids]
        last_text = rows.text.take(pa.array(last)) if rows.text is not None else None
        update = _points_table(
            last_ids,
            rows.ts[last],
            rows.value[last],
            rows.quality[last],
            last_text,
        )
        steps += [
            (
                "INSERT INTO points SELECT * FROM _points_in",
                "_points_in",
                _points_table(rows.tag_id, rows.ts, rows.value, rows.quality, rows.text),
            ),
            (
                "UPDATE latest SET ts = u.ts, value = u.value, quality = u.quality, "
                "text = u.text FROM _latest_upd AS u WHERE latest.tag_id = u.tag_id",
                "_latest_upd",
                update.filter(pa.array(known)),
            ),
            (
                "INSERT INTO latest SELECT * FROM _latest_new",
                "_latest_new",
                update.filter(pa.array(~known)),
            ),
        ]
        if rows.new_ids:
            new_rows = [schema.meta_to_row(i, new_metas[p]) for p, i in rows.new_ids.items()]
            steps.insert(
                len(steps) - 3,
                (
                    "INSERT INTO tags SELECT * FROM _tags_new",
                    "_tags_new",
                    schema.tags_table(new_rows),
                ),
            )
        self._todo_touched, new_pairs = self._compactor.todo.commit_pairs(rows.tag_id, rows.ts)
        if new_pairs:
            steps.append(
                (
                    "INSERT INTO compaction_todo SELECT * FROM _todo_in",
                    "_todo_in",
                    compaction.todo_table(new_pairs),
                )
            )
        latest.has[last_ids] = True
        latest.ts[last_ids] = rows.ts[last]
        latest.value[last_ids] = rows.value[last]
        latest.quality[last_ids] = rows.quality[last]
        if last_text is not None:
            latest.text[last_ids] = last_text.to_numpy(zero_copy_only=False)
        else:
            latest.text[last_ids] = None
        return Snapshot(catalog or snap.catalog, latest)

    def _register(self, metas: tuple[TagMeta, ...]) -> None:
        con = self._con
        assert con is not None
        snap = self.snapshot
        by_path = {m.path: m for m in metas}
        next_id = snap.catalog.next_id
        new_ids: dict[str, int] = {}
        new_rows, upd_rows = [], []
        for path, meta in by_path.items():
            tag_id = snap.catalog.ids.get(path)
            if tag_id is None:
                tag_id = new_ids[path] = next_id
                next_id += 1
                new_rows.append(schema.meta_to_row(tag_id, meta))
            else:
                upd_rows.append(schema.meta_to_row(tag_id, meta))
        self._transaction(
            con,
            [
                (
                    "INSERT INTO tags SELECT * FROM _tags_new",
                    "_tags_new",
                    schema.tags_table(new_rows),
                ),
                (
                    "UPDATE tags SET unit = u.unit, description = u.description, "
                    "data_type = u.data_type, eng_low = u.eng_low, eng_high = u.eng_high, "
                    "states = u.states FROM _tags_upd AS u WHERE tags.id = u.id",
                    "_tags_upd",
                    schema.tags_table(upd_rows),
                ),
            ],
        )
        catalog = snap.catalog.with_tags(new_ids, by_path)
        self.snapshot = Snapshot(catalog, snap.latest.grown(catalog.next_id))

    @staticmethod
    def _transaction(
        con: duckdb.DuckDBPyConnection, steps: Sequence[tuple[str, str, pa.Table]]
    ) -> None:
        """Run statements in one transaction, each reading one Arrow table as a view.

        A step whose table is empty would change nothing and is skipped: each statement
        costs about a millisecond even when it has nothing to do.
        """
        steps = [step for step in steps if step[2].num_rows]
        if not steps:
            return
        for _, view, table in steps:
            con.register(view, table)
        try:
            con.begin()
            try:
                for statement, _, _ in steps:
                    con.execute(statement)
                con.commit()
            except duckdb.Error:
                try:
                    con.rollback()
                except duckdb.Error:
                    logger.exception("historian rollback failed")
                raise
        finally:
            for _, view, _ in steps:
                con.unregister(view)


def _points_table(
    tag_id: Int32Array,
    ts: Int64Array,
    value: Float64Array,
    quality: UInt32Array,
    text: pa.Array | None,
) -> pa.Table:
    n = len(ts)
    return pa.Table.from_arrays(
        [
            pa.array(tag_id, type=pa.int32()),
            pa.array(ts, type=pa.int64()),
            pa.array(value, type=pa.float64()),
            pa.array(quality, type=pa.uint32()),
            text if text is not None else pa.nulls(n, pa.string()),
        ],
        schema=schema.POINTS_SCHEMA,
    )
