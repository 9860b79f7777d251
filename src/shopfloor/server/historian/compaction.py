"""Compaction of the DuckDB historian: closed UTC days rewritten tag by tag, in time order.

**Why.** The writer commits what arrived in the last second or so, sorted by
``(tag_id, ts)`` within the commit only, so a day of a 1 Hz tag lies in thousands of
short runs. Each run boundary costs twice. DuckDB packs a ``BIGINT`` column in groups of
2048 values, by delta when the deltas are narrow and by frame of reference when they are
not; a group holding the jump from one tag's last timestamp to the next tag's first loses
delta packing (42 bits per timestamp instead of 24 with 5 ms of jitter). And every row
group holds every tag, so a read of one tag prunes nothing by ``tag_id``. Rewriting a
closed day in ``(tag_id, ts)`` order puts each tag's day into one run: measured on 1 Hz
data with 5 ms of jitter, 7.5 bytes per point as committed, 6.4 after compacting an hour
per tag and 4.3-4.6 after compacting a day per tag (bench/historian.py, docs/historian.md).

**Which points.** The writer records every ``(day, tag)`` that received points in
``compaction_todo``, in the same transaction as the points (only pairs it has not recorded
yet: one row per tag and day, not per commit). A day is due ``grace`` after its end.

**How.** A pass takes the due pairs in chunks of at most ``chunk_rows`` points and
rewrites each chunk in one transaction: copy the chunk's rows, sorted, into a temporary
table, delete them from ``points``, insert them back from the temporary table. Killed at
any moment, the transaction leaves all or nothing: no point is lost or stored twice.
Readers keep their snapshot. Row groups whose rows are all deleted are dropped at the
next checkpoint that has changes to write, and their blocks reused: bytes per point are
measured from used blocks, not from the file size.

**Rollups.** The same worker thread refreshes the rollups after the pass's compaction
chunks (:func:`~shopfloor.server.historian.duckdb_rollup.refresh`), every
``RollupSettings.interval_s`` and on every :meth:`Compactor.request`. A commit's point
that lands before the rollups' frontier is *late*: :meth:`Todo.commit_pairs` adds a row
for its ``(day, tag, hour)`` to what the writer inserts into ``compaction_todo`` in the
commit's transaction, so the mark is as durable as the point, and a refresh recomputes
that hour from raw. Compaction ignores these rows (``hour`` is NULL in its own).

**Beside the writer.** A pass runs on a worker thread with its own cursor; only the
bookkeeping (which pairs are done, :class:`Compactor`) is on the writer thread. Ingest
does not wait for it: the writer only appends points and updates ``latest``, the worker
only deletes and re-appends old points, so their transactions never touch the same row.
A step costs a scan of its day (tags are mixed in the committed row groups) plus a sort
of its chunk: 0.5 s for a million points of a 3.6-million-point day, 1.2 s of a
20-million-point day (measured).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import duckdb
import numpy as np
import pyarrow as pa

from shopfloor.errors import HistorianError, ShutdownError
from shopfloor.model.points import Int32Array, Int64Array
from shopfloor.server.historian import duckdb_rollup
from shopfloor.server.historian.rollup import HOUR_NS, MINUTE_NS, RollupSettings

__all__ = [
    "RANGE_NS",
    "TODO_DDL",
    "ChunkDone",
    "CompactionReport",
    "Compactor",
    "PassDone",
    "Todo",
    "load_todo",
]

logger = logging.getLogger(__name__)

RANGE_NS = 86_400 * 10**9
"""A compaction range: one UTC day. A day per tag is one run (see the module docstring)."""

TODO_DDL = (
    "CREATE TABLE IF NOT EXISTS compaction_todo("
    "range_start BIGINT NOT NULL, tag_id INTEGER NOT NULL, hour BIGINT)"
)
"""The ``(day, tag)`` pairs holding points not compacted yet (``hour`` NULL), and the
``(day, tag, hour)`` marks of late points for the rollups; no key (the writer dedupes)."""

_TODO_SCHEMA = pa.schema(
    [
        pa.field("range_start", pa.int64(), nullable=False),
        pa.field("tag_id", pa.int32(), nullable=False),
        pa.field("hour", pa.int64()),
    ]
)

TodoRow = tuple[int, int] | tuple[int, int, int]
"""A row for ``compaction_todo``: a ``(day, tag)`` pair, or a late ``(day, tag, hour)``."""


@dataclass(frozen=True, slots=True)
class CompactionReport:
    """What one compaction pass did (both backends).

    Attributes:
        points: points rewritten (DuckDB) or moved into compact blocks (PostgreSQL).
        ranges: ``(day, tag)`` pairs (DuckDB) or ``(hour, tag)`` blocks (PostgreSQL) written.
        steps: transactions committed.
        seconds: wall time of the pass.
        longest_step_s: the longest transaction; on DuckDB ingest waited at most this long.
        rollup_rows: rollup rows (1-minute and 1-hour) written by the pass.
        rollup_steps: rollup transactions committed (DuckDB; on PostgreSQL rollups are
            written in the compaction steps).
    """

    points: int
    ranges: int
    steps: int
    seconds: float
    longest_step_s: float
    rollup_rows: int = 0
    rollup_steps: int = 0


@dataclass(slots=True)
class CompactionTotals:
    """What compaction did since the historian started (for ``/healthz``; both backends)."""

    points: int = 0
    """Points rewritten (DuckDB) or moved into compact blocks (PostgreSQL)."""
    rollup_rows: int = 0
    """Rollup rows (1-minute and 1-hour) written."""

    def add(self, report: CompactionReport) -> None:
        """Count one finished pass."""
        self.points += report.points
        self.rollup_rows += report.rollup_rows


def floor_range(ts: Int64Array) -> Int64Array:
    """The start of each timestamp's UTC day (floored: before 1970 too)."""
    starts: Int64Array = ts - ts % RANGE_NS  # numpy's % takes the divisor's sign
    return starts


class Todo:
    """The ``(day, tag)`` pairs with points not compacted yet: the writer's mirror of
    ``compaction_todo``, changed only after the transaction that changed the table.

    Each pair keeps the number of the last commit that wrote to it, so a chunk compacted
    from an older snapshot does not forget points it could not see.

    ``late_before`` is the rollups' frontier, or the target of a refresh under way if
    later (None: rollups never refreshed): a committed point before it is late.
    """

    def __init__(self, pairs: Iterable[tuple[int, int]] = ()) -> None:
        self._days: dict[int, dict[int, int]] = {}
        self.late_before: int | None = None
        self.touch(pairs, 0)

    def __len__(self) -> int:
        return sum(len(tags) for tags in self._days.values())

    def commit_pairs(
        self, tag_id: Int32Array, ts: Int64Array
    ) -> tuple[list[tuple[int, int]], list[TodoRow]]:
        """The distinct pairs of a commit's points, and the rows to record for them.

        The rows are the pairs not recorded yet, then a ``(day, tag, hour)`` mark per hour
        and tag holding a late point (see :attr:`late_before`). One numpy pass, then a
        loop per pair (a tag and day) and late hour, not per point.
        """
        if not len(ts):
            return [], []
        day = floor_range(ts) // RANGE_NS
        # tag ids are positive int32: one int64 key per pair, day in the high half
        key = np.unique((day << 32) | tag_id.astype(np.int64))
        days, tags = ((key >> 32) * RANGE_NS).tolist(), (key & 0xFFFFFFFF).tolist()
        pairs = list(zip(days, tags, strict=True))
        new: list[TodoRow] = [(d, t) for d, t in pairs if t not in self._days.get(d, {})]
        if self.late_before is not None:
            late = ts < self.late_before
            if late.any():
                hour = ts[late] - ts[late] % HOUR_NS
                marks = np.unique((hour // HOUR_NS << 32) | tag_id[late].astype(np.int64))
                for h, t in zip(
                    ((marks >> 32) * HOUR_NS).tolist(), (marks & 0xFFFFFFFF).tolist(), strict=True
                ):
                    new.append((h - h % RANGE_NS, t, h))
        return pairs, new

    def touch(self, pairs: Iterable[tuple[int, int]], commit: int) -> None:
        """Record that commit number ``commit`` wrote to ``pairs`` (after it committed)."""
        for day, tag in pairs:
            self._days.setdefault(day, {})[tag] = commit

    def discard(self, day: int, tags: Iterable[int], *, untouched_since: int) -> list[int]:
        """Forget the pairs no commit after ``untouched_since`` wrote to; return their tags."""
        known = self._days.get(day)
        if known is None:
            return []
        done = [t for t in tags if t in known and known[t] <= untouched_since]
        for tag in done:
            del known[tag]
        if not known:
            del self._days[day]
        return done

    def tags_of(self, day: int) -> list[int]:
        """The tags of ``day`` waiting for compaction, ascending."""
        return sorted(self._days.get(day, ()))

    def due(self, limit_ns: int) -> list[int]:
        """Days that end at or before ``limit_ns`` and hold pairs, oldest first."""
        return sorted(d for d in self._days if d + RANGE_NS <= limit_ns)


def todo_table(pairs: Sequence[TodoRow]) -> pa.Table:
    """Pairs (and late marks) as rows of ``compaction_todo``."""
    return pa.Table.from_arrays(
        [
            pa.array([p[0] for p in pairs], type=pa.int64()),
            pa.array([p[1] for p in pairs], type=pa.int32()),
            pa.array([p[2] if len(p) > 2 else None for p in pairs], type=pa.int64()),
        ],
        schema=_TODO_SCHEMA,
    )


def load_todo(con: duckdb.DuckDBPyConnection, *, seed: bool) -> Todo:
    """Load the pairs; with ``seed`` (the table was just created) record every stored pair.

    Seeding makes a database written before compaction existed compact its old days too:
    one scan of ``points`` at the first start after the upgrade.
    """
    if seed:
        con.execute(
            "INSERT INTO compaction_todo (range_start, tag_id) "
            "SELECT DISTINCT ts - (((ts % $r) + $r) % $r), tag_id FROM points",
            {"r": RANGE_NS},
        )
    rows = con.execute(
        "SELECT DISTINCT range_start, tag_id FROM compaction_todo WHERE hour IS NULL"
    ).fetchall()
    todo = Todo((int(d), int(t)) for d, t in rows)
    todo.late_before = duckdb_rollup.read_frontier(con)
    return todo


def has_todo_table(con: duckdb.DuckDBPyConnection) -> bool:
    """Whether ``compaction_todo`` exists (before the schema is created or upgraded)."""
    row = con.execute(
        "SELECT count(*) FROM duckdb_tables() WHERE table_name = 'compaction_todo' "
        "AND schema_name = 'main' AND database_name = current_database()"
    ).fetchone()
    return bool(row and row[0])


def _chunks(counts: dict[int, int], tags: Sequence[int], chunk_rows: int) -> list[list[int]]:
    """Tags packed in order into chunks of at most ``chunk_rows`` points (a bigger tag alone)."""
    out: list[list[int]] = []
    current: list[int] = []
    rows = 0
    for tag in tags:
        n = counts.get(tag, 0)
        if current and rows + n > chunk_rows:
            out.append(current)
            current, rows = [], 0
        current.append(tag)
        rows += n
    if current:
        out.append(current)
    return out


_CHUNK_WHERE = (
    "ts >= $lo AND ts < $hi AND tag_id BETWEEN $first AND $last "
    "AND tag_id IN (SELECT tag_id FROM _compact_tags)"
)
"""The chunk's rows: the BETWEEN lets zone maps skip row groups, the IN picks the tags."""


def rewrite(con: duckdb.DuckDBPyConnection, day: int, tags: Sequence[int]) -> int:
    """Rewrite the points of ``tags`` on ``day`` sorted by (tag_id, ts), in one transaction.

    Returns the number of points rewritten.

    Raises:
        duckdb.Error: the transaction failed (rolled back: nothing changed).
        HistorianError: the rows deleted and inserted differ (rolled back).
    """
    params = {"lo": day, "hi": day + RANGE_NS, "first": min(tags), "last": max(tags)}
    con.register("_compact_tags", pa.table({"tag_id": pa.array(tags, type=pa.int32())}))
    try:
        con.begin()
        try:
            con.execute(
                f"CREATE TEMP TABLE _compact AS SELECT * FROM points WHERE {_CHUNK_WHERE} "
                "ORDER BY tag_id, ts",
                params,
            )
            deleted = _count(con.execute(f"DELETE FROM points WHERE {_CHUNK_WHERE}", params))
            inserted = _count(con.execute("INSERT INTO points SELECT * FROM _compact"))
            if deleted != inserted:  # one snapshot, one condition: cannot happen
                raise HistorianError(
                    f"compaction of day {day} deleted {deleted} points but kept {inserted}"
                )
            con.execute("DROP TABLE _compact")
            con.commit()
        except (duckdb.Error, HistorianError):
            try:
                con.rollback()
            except duckdb.Error:
                logger.exception("rolling back a compaction step failed")
            raise
    finally:
        con.unregister("_compact_tags")
    return inserted


def forget(con: duckdb.DuckDBPyConnection, day: int, tags: Sequence[int]) -> None:
    """Delete the ``compaction_todo`` rows of compacted pairs (writer thread).

    Late marks stay for the rollup refresh (which deletes them in its own transactions).
    """
    con.execute(
        "DELETE FROM compaction_todo WHERE range_start = ? AND list_contains(?, tag_id) "
        "AND hour IS NULL",
        [day, list(tags)],
    )


def _count(cur: duckdb.DuckDBPyConnection) -> int:
    row = cur.fetchone()
    return int(row[0]) if row else 0


def _counts(con: duckdb.DuckDBPyConnection, day: int, tags: list[int]) -> dict[int, int]:
    rows = con.execute(
        "SELECT tag_id, count(*) FROM points WHERE ts >= $lo AND ts < $hi "
        "AND tag_id BETWEEN $first AND $last GROUP BY tag_id",
        {"lo": day, "hi": day + RANGE_NS, "first": tags[0], "last": tags[-1]},
    ).fetchall()
    return {int(t): int(n) for t, n in rows}


# ------------------------------------------------------------- messages to the writer
@dataclass(frozen=True, slots=True)
class ChunkDone:
    """The worker committed a chunk: the writer forgets the pairs not written to since.

    ``seq`` is the writer's commit count read before the chunk's transaction began: every
    commit up to it is inside the chunk; a pair touched by a later one stays to do.
    """

    day: int
    tags: tuple[int, ...]
    seq: int


@dataclass(frozen=True, slots=True)
class PassDone:
    """The worker finished a pass (``failure``: it stopped at a failed chunk)."""

    report: CompactionReport
    failure: BaseException | None


# ----------------------------------------------------------------------- the worker
def run_pass(
    con: duckdb.DuckDBPyConnection,
    work: list[tuple[int, list[int]]],
    *,
    chunk_rows: int,
    seq: Callable[[], int],
    post: Callable[[ChunkDone | PassDone], None],
    stop: threading.Event,
    rollup_target: int | None = None,
    rollup_chunk_rows: int | None = None,
) -> None:
    """Compact ``work`` (days and their pending tags) chunk by chunk, on the worker thread,
    then refresh the rollups up to ``rollup_target`` (None: not in this pass) in steps
    of at most ``rollup_chunk_rows`` points (None: ``chunk_rows``).

    Each chunk is one transaction on ``con`` (the worker's own cursor, closed at the end),
    reported to the writer by ``post``; so is the end of the pass.
    """
    started = time.perf_counter()
    points = ranges = steps = 0
    longest = 0.0
    rolled = duckdb_rollup.RefreshReport(0, 0, 0.0)
    failure: BaseException | None = None
    try:
        for day, tags in work:
            chunks = _chunks(_counts(con, day, tags), tags, chunk_rows)
            for chunk in chunks:
                if stop.is_set():
                    return
                before = seq()  # read before BEGIN: those commits are in the snapshot
                step = time.perf_counter()
                points += rewrite(con, day, chunk)
                longest = max(longest, time.perf_counter() - step)
                ranges += len(chunk)
                steps += 1
                post(ChunkDone(day, tuple(chunk), before))
        if rollup_target is not None and not stop.is_set():
            rolled = duckdb_rollup.refresh(
                con, target=rollup_target, chunk_rows=rollup_chunk_rows or chunk_rows, stop=stop
            )
    except (duckdb.Error, HistorianError) as err:
        failure = err
    except Exception as err:  # the worker's supervisor: the writer must hear of the end
        logger.exception("historian compaction crashed")
        failure = err
    finally:
        try:
            con.close()
        except duckdb.Error:
            logger.exception("closing the compaction cursor failed")
        if not stop.is_set():
            report = CompactionReport(
                points,
                ranges,
                steps,
                time.perf_counter() - started,
                longest,
                rollup_rows=rolled.rows,
                rollup_steps=rolled.steps,
            )
            post(PassDone(report, failure))


class Compactor:
    """When to compact and refresh rollups, and the pass in progress (writer thread only).

    A pass runs on a worker thread of its own, with its own cursor: DuckDB lets its
    transaction (which deletes and re-inserts old rows) run beside the writer's (which
    only inserts new ones and updates ``latest``), so ingest does not wait for it. The
    bookkeeping stays on the writer thread: after each chunk the worker posts
    :class:`ChunkDone` and the writer forgets the chunk's pairs, unless a commit wrote to
    one after the chunk's snapshot began (then it stays to do: compacting it again is
    harmless). After its chunks a pass refreshes the rollups (unless they are off). The
    pass ends with :class:`PassDone`; after one that compacted, the writer checkpoints,
    which drops the emptied row groups.

    Args:
        interval_s: how often to look for closed days (None: only when asked).
        grace_ns: a day is due this long after it ended.
        chunk_rows: the most points one transaction rewrites (or rolls up).
        clock: the wall clock in UTC nanoseconds.
        post: hands a worker's message to the writer thread (its queue).
        rollups: whether and how often to refresh the rollups.
    """

    def __init__(
        self,
        *,
        interval_s: float | None,
        grace_ns: int,
        chunk_rows: int,
        clock: Callable[[], int],
        post: Callable[[ChunkDone | PassDone], None],
        rollups: RollupSettings | None = None,
    ) -> None:
        self.commits = 0
        """The writer's count of committed writes of points (the worker reads it)."""
        self._post = post
        self._interval_s = interval_s
        self._grace_ns = grace_ns
        self._chunk_rows = chunk_rows
        self._clock = clock
        self.rollups = rollups if rollups is not None else RollupSettings()
        self._con: duckdb.DuckDBPyConnection | None = None
        self._checkpoints = False
        self._next_pass = float("inf")
        self._next_rollup = float("inf")
        self._worker: ThreadPoolExecutor | None = None
        self._running: Future[None] | None = None
        self._cursor: duckdb.DuckDBPyConnection | None = None
        self._stop = threading.Event()
        self._waiters: list[Future[CompactionReport]] = []  # for the next pass to start
        self._served: list[Future[CompactionReport]] = []  # for the pass running
        self._failing = False
        self.todo = Todo()
        self.totals = CompactionTotals()
        self.rollup_chunk_rows: int | None = None
        """The most raw points a rollup step reads (None: ``chunk_rows``)."""

    def open(self, con: duckdb.DuckDBPyConnection, *, seed: bool, checkpoints: bool) -> None:
        """Load the pairs (see :func:`load_todo`); ``checkpoints``: a file, not memory."""
        self._con = con
        self._checkpoints = checkpoints
        self.todo = load_todo(con, seed=seed)

    def start_timer(self) -> None:
        """Schedule the first periodic looks one interval from now."""
        if self._interval_s is not None:
            self._next_pass = time.monotonic() + self._interval_s
        if self.rollups.enabled and self.rollups.interval_s is not None:
            self._next_rollup = time.monotonic() + self.rollups.interval_s

    def wait_s(self) -> float | None:
        """How long the writer may wait for a message before the next periodic look."""
        due = min(self._next_pass, self._next_rollup)
        if due == float("inf"):
            return None
        return max(0.0, due - time.monotonic())

    def tick(self) -> None:
        """Start a periodic pass if it is time (the writer calls this between messages)."""
        now = time.monotonic()
        if now >= self._next_pass:
            self._begin(compact=True)
        elif now >= self._next_rollup:
            self._begin(compact=False)

    def request(self, done: Future[CompactionReport]) -> None:
        """Compact and refresh rollups now; ``done`` gets the report of a pass that began
        after this call (after the running one, if any)."""
        self._waiters.append(done)
        self._begin(compact=True)

    def _rollup_target(self) -> int | None:
        """The frontier this pass rolls up to: a whole minute, a grace before now."""
        if not self.rollups.enabled:
            return None
        if self.rollups.interval_s is not None:
            self._next_rollup = time.monotonic() + self.rollups.interval_s
        now = self._clock() - int(self.rollups.grace_s * 1e9)
        target = now - now % MINUTE_NS
        known = self.todo.late_before
        # before the worker's snapshot: a commit from now on that lands before the
        # target is marked late, whatever this pass sees
        self.todo.late_before = target if known is None else max(known, target)
        return target

    def _begin(self, *, compact: bool) -> None:
        if compact and self._interval_s is not None:
            self._next_pass = time.monotonic() + self._interval_s
        if self._running is not None:
            return  # the next pass starts when this one ends, if someone waits for it
        con = self._con
        assert con is not None
        work: list[tuple[int, list[int]]] = []
        if compact:
            limit = self._clock() - self._grace_ns
            work = [(day, self.todo.tags_of(day)) for day in self.todo.due(limit)]
        target = self._rollup_target()
        self._served, self._waiters = self._waiters, []
        if not work and target is None:
            self._finish(CompactionReport(0, 0, 0, 0.0, 0.0), None)
            return
        if self._worker is None:
            self._worker = ThreadPoolExecutor(1, thread_name_prefix="historian-compaction")
        self._cursor = con.cursor()  # made here: the writer's connection is not shared
        self._running = self._worker.submit(
            run_pass,
            self._cursor,
            work,
            chunk_rows=self._chunk_rows,
            seq=lambda: self.commits,
            post=self._posted,
            stop=self._stop,
            rollup_target=target,
            rollup_chunk_rows=self.rollup_chunk_rows,
        )

    def _posted(self, message: ChunkDone | PassDone) -> None:
        """On the worker thread: hand the message over unless the writer is stopping."""
        # ShutdownError: the writer stops; what was compacted stays, the rest waits
        with contextlib.suppress(ShutdownError):
            self._post(message)

    def handle(self, message: ChunkDone | PassDone) -> None:
        """Apply a worker's message on the writer thread."""
        if isinstance(message, ChunkDone):
            done = self.todo.discard(message.day, message.tags, untouched_since=message.seq)
            if done and self._con is not None:
                try:
                    forget(self._con, message.day, done)
                except duckdb.Error as err:  # the pairs stay in the table: done again later
                    logger.warning("historian compaction: cannot forget compacted pairs: %s", err)
            return
        self._running = None
        self._cursor = None
        self._finish(message.report, message.failure)
        if self._waiters:  # asked for while that pass ran: a pass of their own
            self._begin(compact=True)

    def _finish(self, report: CompactionReport, failure: BaseException | None) -> None:
        if failure is not None:
            if not self._failing:
                self._failing = True
                logger.error(
                    "historian compaction failed (that chunk changed nothing): %s", failure
                )
        elif report.steps or report.rollup_steps:
            self.totals.add(report)
            if self._failing:
                self._failing = False
                logger.info("historian compaction works again")
            if report.steps:
                self._checkpoint()
                logger.info(
                    "historian compaction: %d points of %d tag-days rewritten in %.1f s "
                    "(longest transaction %.2f s)",
                    report.points,
                    report.ranges,
                    report.seconds,
                    report.longest_step_s,
                )
            logger.debug("historian rollups: %d rows written", report.rollup_rows)
        served, self._served = self._served, []
        for done in served:
            if failure is None:
                done.set_result(report)
            else:
                err = HistorianError(f"compaction failed: {failure}")
                err.__cause__ = failure
                done.set_exception(err)

    def _checkpoint(self) -> None:
        """Drop the row groups the pass emptied now (else: at the next checkpoint)."""
        if self._con is None or not self._checkpoints:
            return
        try:
            self._con.execute("CHECKPOINT")
        except duckdb.Error as err:
            logger.info("checkpoint after compaction skipped: %s", err)

    def stop(self) -> None:
        """Interrupt a running pass and join the worker (the writer is stopping).

        The interrupted chunk rolls back; chunks done stay done; the pairs left stay in
        ``compaction_todo`` for the next start.
        """
        self._stop.set()
        cursor, running = self._cursor, self._running
        if cursor is not None and running is not None and not running.done():
            try:
                cursor.interrupt()
            except duckdb.Error:
                logger.exception("interrupting the compaction failed")
        if self._worker is not None:
            self._worker.shutdown(wait=True)
        self._running = self._cursor = None
        waiters, self._waiters, self._served = self._waiters + self._served, [], []
        for done in waiters:
            done.set_exception(HistorianError("the historian closed before compaction finished"))
