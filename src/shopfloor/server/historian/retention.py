"""Retention and the disk budget of the DuckDB historian: whole days deleted, blocks reused.

**What goes.** Raw points of a tag go a whole UTC day at a time, once all of the day is
older than the tag's retention (:mod:`~.retention_policy`); rows of rollup tables
(:mod:`~.rollup_tables`) once their time is before their cutoff day. When a disk budget
is set and the history uses more, the oldest whole day of raw points (every tag) goes,
then the next, then the oldest day of 1-minute rollups, then of 1-hour rollups; the
current UTC day is never evicted.

**Why whole days.** Compaction (:mod:`~.compaction`) rewrites each closed day tag by tag,
so a ``(tag, day)`` range is a run of whole row groups (or the part of one it shares with
its neighbour). Deleting it and checkpointing drops those row groups and returns their
blocks to the free list; DuckDB also rewrites a row group that lost part of its rows. New
points then go into the free blocks: measured, the used blocks fall by the share deleted
and the file stops growing (tests/unit/server/historian/test_retention_duckdb.py,
bench/retention.py). The file itself never shrinks (DuckDB reuses, it does not
truncate), which is why the budget counts *used* blocks (``PRAGMA database_size``) plus
the write-ahead log, not the file's size. No ``VACUUM`` is needed or run.

**Beside the writer.** A pass runs on a worker thread of its own with its own cursor,
like compaction: the writer only appends and updates ``latest``, a pass only deletes old
rows, so ingest does not wait. A delete that meets a compaction step rewriting the same
rows conflicts; one of them rolls back (nothing is lost) and is done again by its next
pass. Each day is one transaction.

**Rollups.** Raw points are deleted for retention only once the rollups hold them
(:func:`~.duckdb_rollup.rolled_up_before`; a database whose rollups never ran has
nothing to wait for); the disk budget does not wait. Every delete records, in its own
transaction, the time before which the tags' raw points (or a rollup table's rows) are
gone (:func:`~.duckdb_rollup.set_raw_floor`, :func:`~.duckdb_rollup.set_rollup_floor`),
so queries answer that time from rollups, or say why they cannot, rather than count
deleted points as missing. These three calls are the whole coupling (:func:`_raw_floor`,
:func:`_rollup_floor`, :func:`_rolled_up_before`).

**Cost.** A pass finds the expired ``(day, tag)`` units with one scan of the rows before
the newest cutoff (zone maps skip the rest) and remembers below which time every
retained tag is clean, so later passes scan only what aged since; once a day it looks
at everything again (points imported into the past).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from shopfloor.errors import HistorianError
from shopfloor.server.historian import duckdb_rollup, rollup_tables
from shopfloor.server.historian.retention_loop import RetentionLoop, RetentionReport
from shopfloor.server.historian.retention_policy import (
    DAY_NS,
    RetentionPolicy,
    cutoff_of,
    expired_units,
    floor_day,
)
from shopfloor.server.historian.rollup_tables import RollupTable

__all__ = ["DuckDBRetention", "UsedSpace", "checkpoint", "used_space"]

logger = logging.getLogger(__name__)

_FULL_SCAN_S = 86_400.0
"""How often a pass looks at all old rows again, not only those that aged since the last."""


# ----------------------------------------------------------------------- measuring
@dataclass(frozen=True, slots=True)
class UsedSpace:
    """What a DuckDB database takes on disk.

    Attributes:
        block_size: bytes per block.
        used_blocks: blocks holding data.
        free_blocks: blocks inside the file free for reuse.
        wal_bytes: the write-ahead log (changes not yet checkpointed).
        file_bytes: the database file's size (0 in memory).
    """

    block_size: int
    used_blocks: int
    free_blocks: int
    wal_bytes: int
    file_bytes: int

    @property
    def used_bytes(self) -> int:
        """What the disk budget counts: used blocks plus the write-ahead log."""
        return self.used_blocks * self.block_size + self.wal_bytes


def _rows(con: duckdb.DuckDBPyConnection, sql: str, params: Any = None) -> list[tuple[Any, ...]]:
    """Run a statement and fetch all of it (DuckDB 2 refuses new work on a half-read result)."""
    return con.execute(sql, params if params is not None else []).fetchall()


def _file_size(path: Path) -> int:
    try:
        return os.stat(path).st_size
    except FileNotFoundError:
        return 0


def used_space(con: duckdb.DuckDBPyConnection, path: Path | None) -> UsedSpace:
    """Measure the database (``PRAGMA database_size``; the WAL from its file)."""
    row = _rows(
        con, "SELECT block_size, used_blocks, free_blocks FROM pragma_database_size() LIMIT 1"
    )
    block_size, used, free = (int(v) for v in row[0]) if row else (0, 0, 0)
    if path is None:
        return UsedSpace(block_size, used, free, 0, 0)
    wal = _file_size(path.with_name(path.name + ".wal"))
    return UsedSpace(block_size, used, free, wal, _file_size(path))


def checkpoint(con: duckdb.DuckDBPyConnection) -> None:
    """Write deletes out so their row groups are dropped and blocks freed.

    DuckDB skips it while another transaction writes; the next checkpoint with changes
    (the writer's own, automatic) then frees them.
    """
    try:
        _rows(con, "CHECKPOINT")
    except duckdb.Error as err:
        logger.info("checkpoint after retention skipped: %s", err)


# ------------------------------------------------- the rollups' side (duckdb_rollup)
def _raw_floor(con: duckdb.DuckDBPyConnection, tags: Sequence[int], floor_ns: int) -> None:
    """Tell the rollups that raw points of ``tags`` before ``floor_ns`` are gone (in the
    deleting transaction)."""
    if tags:
        duckdb_rollup.set_raw_floor(con, list(tags), floor_ns)


_LEVELS = {name: level for level, name in duckdb_rollup.TABLES.items()}


def _rollup_floor(con: duckdb.DuckDBPyConnection, table: RollupTable, floor_ns: int) -> None:
    """Tell the rollups that rows of their table before ``floor_ns`` are gone."""
    level = _LEVELS.get(table.name)
    if level is not None:
        duckdb_rollup.set_rollup_floor(con, level, floor_ns)


def _rolled_up_before(con: duckdb.DuckDBPyConnection) -> int | None:
    """Raw points before this time are rolled up (None: rollups never ran here)."""
    return duckdb_rollup.rolled_up_before(con)


# ------------------------------------------------------------------------ deleting
def _count(rows: list[tuple[Any, ...]]) -> int:
    return int(rows[0][0]) if rows and rows[0][0] is not None else 0


def _in_transaction(con: duckdb.DuckDBPyConnection, work: Callable[[], int]) -> int:
    con.begin()
    try:
        result = work()
        con.commit()
    except duckdb.Error:
        with contextlib.suppress(duckdb.Error):
            con.rollback()
        raise
    return result


def delete_day(
    con: duckdb.DuckDBPyConnection,
    day: int,
    tags: Sequence[int] | None,
    *,
    every_tag: Sequence[int] = (),
) -> int:
    """Delete the raw points of ``tags`` (None: every tag) on UTC ``day``; one transaction.

    The same transaction records the new raw floor of those tags (``every_tag`` when
    ``tags`` is None). Returns the number of points deleted.
    """
    params: dict[str, Any] = {"lo": day, "hi": day + DAY_NS}
    where = "ts >= $lo AND ts < $hi"
    floored = every_tag if tags is None else tags

    def work() -> int:
        deleted = _count(_rows(con, f"DELETE FROM points WHERE {where}", params))
        _raw_floor(con, floored, day + DAY_NS)
        return deleted

    if tags is None:
        return _in_transaction(con, work)
    params |= {"first": min(tags), "last": max(tags)}
    # the BETWEEN lets zone maps of compacted days skip row groups of other tags
    where += " AND tag_id BETWEEN $first AND $last AND tag_id IN (SELECT tag_id FROM _expired)"
    con.register("_expired", pa.table({"tag_id": pa.array(tags, type=pa.int32())}))
    try:
        return _in_transaction(con, work)
    finally:
        con.unregister("_expired")


def old_units(con: duckdb.DuckDBPyConnection, lo: int | None, hi: int) -> dict[int, set[int]]:
    """The tags holding points on each UTC day in ``[lo, hi)`` (lo None: from the start)."""
    where = "ts < $hi" + ("" if lo is None else " AND ts >= $lo")
    params: dict[str, Any] = {"hi": hi, "d": DAY_NS} | ({} if lo is None else {"lo": lo})
    rows = _rows(
        con,
        f"SELECT DISTINCT ts - (((ts % $d) + $d) % $d) AS day, tag_id FROM points WHERE {where}",
        params,
    )
    out: dict[int, set[int]] = {}
    for day, tag in rows:
        out.setdefault(int(day), set()).add(int(tag))
    return out


def apply_raw(
    con: duckdb.DuckDBPyConnection, cutoffs: Mapping[int, int], *, lo: int | None
) -> tuple[int, int]:
    """Delete every expired ``(day, tag)`` unit at or after ``lo``; return (points, units)."""
    if not cutoffs:
        return 0, 0
    present = old_units(con, lo, max(cutoffs.values()))
    expired = expired_units(((d, t) for d, tags in present.items() for t in tags), cutoffs)
    points = units = 0
    for day, tags in expired.items():
        whole_day = len(tags) == len(present[day])
        points += delete_day(con, day, None if whole_day else tags, every_tag=tags)
        units += len(tags)
    return points, units


def rollup_capped(con: duckdb.DuckDBPyConnection, cutoffs: Mapping[int, int]) -> dict[int, int]:
    """The cutoffs, none after the day the rollups are complete to (see the docstring)."""
    rolled = _rolled_up_before(con)
    if rolled is None:
        return dict(cutoffs)
    limit = floor_day(rolled)
    return {tag: min(cutoff, limit) for tag, cutoff in cutoffs.items()}


def _bound(table: RollupTable, ns: int) -> int | dt.datetime:
    """A time in the column's own type (aware UTC for TIMESTAMPTZ, naive UTC for TIMESTAMP)."""
    if not table.time_is_timestamp:
        return ns
    moment = dt.datetime.fromtimestamp(ns // 10**9, tz=dt.UTC)
    return moment if table.time_has_zone else moment.replace(tzinfo=None)


def _quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def delete_rollups_before(con: duckdb.DuckDBPyConnection, table: RollupTable, ns: int) -> int:
    """Delete the rows of a rollup table whose time is before ``ns``; one transaction."""
    sql = f"DELETE FROM {_quoted(table.name)} WHERE {_quoted(table.time_column)} < $t"

    def work() -> int:
        deleted = _count(_rows(con, sql, {"t": _bound(table, ns)}))
        _rollup_floor(con, table, ns)
        return deleted

    return _in_transaction(con, work)


def oldest_rollup_ns(con: duckdb.DuckDBPyConnection, table: RollupTable) -> int | None:
    """The time of a rollup table's oldest row (UTC ns), or None when it is empty."""
    column = _quoted(table.time_column)
    expr = f"epoch_ns(min({column}))" if table.time_is_timestamp else f"min({column})"
    rows = _rows(con, f"SELECT {expr} FROM {_quoted(table.name)}")
    return None if not rows or rows[0][0] is None else int(rows[0][0])


def apply_rollups(
    con: duckdb.DuckDBPyConnection,
    tables: Sequence[RollupTable],
    policy: RetentionPolicy,
    now_ns: int,
) -> int:
    """Delete rollup rows past their kind's retention; return how many."""
    deleted = 0
    for table in tables:
        keep = policy.rollup_keep_ns(table.kind)
        if keep is not None:
            deleted += delete_rollups_before(con, table, cutoff_of(now_ns, keep))
    return deleted


# ---------------------------------------------------------------------- the budget
@dataclass(slots=True)
class _Eviction:
    raw_days: int = 0
    raw_points: int = 0
    rollup_days: int = 0
    used: int = 0
    over: bool = False


def _oldest_raw_day(con: duckdb.DuckDBPyConnection) -> int | None:
    rows = _rows(con, "SELECT min(ts) FROM points")
    return None if not rows or rows[0][0] is None else floor_day(int(rows[0][0]))


def _evict_one(
    con: duckdb.DuckDBPyConnection,
    tables: Sequence[RollupTable],
    today: int,
    out: _Eviction,
    every_tag: Sequence[int],
) -> bool:
    """Evict the oldest day there is (raw first, then the finest rollups); False: none left."""
    day = _oldest_raw_day(con)
    if day is not None and day < today:
        out.raw_points += delete_day(con, day, None, every_tag=every_tag)
        out.raw_days += 1
        logger.info("disk budget: evicted the raw points of %s", _date(day))
        return True
    for kind in rollup_tables.KINDS:
        candidates = [
            (oldest, table)
            for table in tables
            if table.kind == kind and (oldest := oldest_rollup_ns(con, table)) is not None
        ]
        candidates = [(floor_day(t), table) for t, table in candidates if floor_day(t) < today]
        if candidates:
            first, table = min(candidates, key=lambda c: (c[0], c[1].name))
            delete_rollups_before(con, table, first + DAY_NS)
            out.rollup_days += 1
            logger.info("disk budget: evicted %s of %s", _date(first), table.name)
            return True
    return False


def evict_to_budget(
    con: duckdb.DuckDBPyConnection,
    *,
    budget: int,
    path: Path | None,
    tables: Sequence[RollupTable],
    today: int,
    every_tag: Sequence[int],
) -> _Eviction:
    """Evict whole days, oldest first, until the used bytes are within ``budget``.

    Measured after a checkpoint each time. A day may free no block by itself (its first
    and last row groups hold neighbouring days' rows too); the next day then frees them.
    But if the checkpoint did not run (another transaction was writing: the write-ahead
    log did not shrink), the figure is stale and the pass stops rather than evict more;
    the next pass goes on.
    """
    out = _Eviction(used=used_space(con, path).used_bytes)
    while out.used > budget:
        if not _evict_one(con, tables, today, out, every_tag):
            out.over = True
            break
        wal = used_space(con, path).wal_bytes
        checkpoint(con)
        space = used_space(con, path)
        stale = space.used_bytes >= out.used and space.wal_bytes >= wal > 0
        out.used = space.used_bytes
        if stale:
            out.over = out.used > budget
            break
    return out


def _date(day_ns: int) -> str:
    return dt.datetime.fromtimestamp(day_ns // 10**9, tz=dt.UTC).date().isoformat()


# ------------------------------------------------------------------------ the pass
@dataclass(slots=True)
class _Scan:
    """Where the last pass left the raw data clean (to scan only what aged since)."""

    clean_below: int | None = None
    full_at: float = 0.0


def run_pass(
    con: duckdb.DuckDBPyConnection,
    policy: RetentionPolicy,
    *,
    ids: Mapping[str, int],
    now_ns: int,
    path: Path | None,
    scan: _Scan,
) -> RetentionReport:
    """One retention pass on ``con`` (the worker's cursor): raw, rollups, then the budget."""
    started = time.perf_counter()
    cutoffs = rollup_capped(con, policy.raw_cutoffs(ids, now_ns))
    full = scan.clean_below is None or time.monotonic() >= scan.full_at
    if full:
        scan.full_at = time.monotonic() + _FULL_SCAN_S
    points, units = apply_raw(con, cutoffs, lo=None if full else scan.clean_below)
    scan.clean_below = min(cutoffs.values()) if cutoffs else None
    tables = rollup_tables.discover_duckdb(con)
    rollup_rows = apply_rollups(con, tables, policy, now_ns)
    if points or rollup_rows:
        checkpoint(con)
    evicted = _Eviction()
    if policy.disk_budget_bytes is not None:
        checkpoint(con)  # frees what earlier passes or compaction deleted, before measuring
        evicted = evict_to_budget(
            con,
            budget=policy.disk_budget_bytes,
            path=path,
            tables=tables,
            today=floor_day(now_ns),
            every_tag=sorted({int(i) for i in ids.values()}),
        )
        used = evicted.used
    else:
        used = used_space(con, path).used_bytes
    return RetentionReport(
        raw_points=points,
        raw_units=units,
        rollup_rows=rollup_rows,
        evicted_raw_days=evicted.raw_days,
        evicted_raw_points=evicted.raw_points,
        evicted_rollup_days=evicted.rollup_days,
        used_bytes=used,
        over_budget=evicted.over,
        seconds=time.perf_counter() - started,
    )


# ---------------------------------------------------------------------- the runner
class DuckDBRetention:
    """Runs retention passes of a DuckDB historian on a worker thread with its own cursor.

    Args:
        policy: what to keep.
        new_cursor: opens a cursor on the historian's database (the writer's).
        tag_ids: the committed tag catalog, path → id (read at the start of each pass).
        path: the database file (None in memory: no file to measure).
        clock: the wall clock in UTC nanoseconds.
    """

    def __init__(
        self,
        policy: RetentionPolicy,
        *,
        new_cursor: Callable[[], duckdb.DuckDBPyConnection],
        tag_ids: Callable[[], Mapping[str, int]],
        path: Path | None,
        clock: Callable[[], int],
    ) -> None:
        self.loop = RetentionLoop(policy, self._pass, clock=clock)
        self._new_cursor = new_cursor
        self._tag_ids = tag_ids
        self._path = path
        self._worker: ThreadPoolExecutor | None = None
        self._cursor: duckdb.DuckDBPyConnection | None = None
        self._task: asyncio.Task[None] | None = None
        self._scan = _Scan()
        self._busy = False

    def start(self) -> None:
        """Start the periodic passes (the first one interval from now)."""
        self._worker = ThreadPoolExecutor(1, thread_name_prefix="historian-retention")
        self._task = asyncio.create_task(self.loop.run(), name="historian-retention")

    async def apply(self) -> RetentionReport:
        """Run a pass now (see :meth:`RetentionLoop.apply`)."""
        return await self.loop.apply()

    async def _pass(self, now_ns: int) -> RetentionReport:
        if self._worker is None:
            raise HistorianError("retention is not running")
        ids = dict(self._tag_ids())
        future = self._worker.submit(self._run, ids, now_ns)
        return await asyncio.wrap_future(future)

    def _run(self, ids: Mapping[str, int], now_ns: int) -> RetentionReport:
        """On the worker thread."""
        if self._cursor is None:
            self._cursor = self._new_cursor()
        self._busy = True
        try:
            return run_pass(
                self._cursor,
                self.loop.policy,
                ids=ids,
                now_ns=now_ns,
                path=self._path,
                scan=self._scan,
            )
        except duckdb.Error as err:
            self._scan.clean_below = None  # look at everything again next time
            raise HistorianError(f"historian retention failed: {err}") from err
        finally:
            self._busy = False

    async def close(self) -> None:
        """Stop the passes: a running one is interrupted (its day rolls back); join the thread."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        worker, self._worker = self._worker, None
        cursor = self._cursor
        if cursor is not None and self._busy:
            with contextlib.suppress(duckdb.Error):
                cursor.interrupt()
        if worker is not None:
            await asyncio.to_thread(worker.shutdown, wait=True)
        self._cursor = None
        if cursor is not None:
            try:
                cursor.close()
            except duckdb.Error:
                logger.exception("closing the retention cursor failed")
