"""Retention and the disk budget of the PostgreSQL historian: whole rows gone, space reused.

What goes and when is the same as on DuckDB (:mod:`~.retention`): raw points a whole UTC
day at a time once the day is older than the tag's retention, rollup rows once their
time is before their cutoff day, and, over the disk budget, the oldest day of every tag,
then the oldest day of 1-minute rollups, then of 1-hour rollups; never the current day.

**Units.** Blocks layout: whole rows of ``points_recent`` and ``points_cold`` (one tag,
one UTC hour: a row never straddles a midnight), deleted with a plain ``DELETE`` per day
and class of tags, found through the ``(tag_id, block)`` index. Version 1's daily
partitions: a day no tag keeps is detached and dropped (the disk space returns at once);
a day some tags keep loses the others' rows by ``DELETE``. TimescaleDB (written, not
tested here: the extension is not installed on the CI machines): ``drop_chunks`` when
every tag has the same retention, ``DELETE`` otherwise.

**Space.** After deleting, a plain ``VACUUM (ANALYZE)`` of the touched tables marks their
space free for new rows: the tables stop growing instead of shrinking, and nothing takes
the exclusive lock of ``VACUUM FULL`` (which this module never runs). The budget
therefore counts *live* bytes (:func:`~.pg_disk_usage.live_bytes`), less what each
eviction deleted (summed from the deleted rows themselves).

**Rollups** (blocks layout): raw points are deleted for retention only once compaction
rolled them up (:func:`~.pg_rollup.rolled_up_before`); the budget does not wait. Each
delete records, in its transaction, the time before which the tags' raw points (or a
rollup table's rows) are gone (:func:`~.pg_rollup.set_raw_floor`,
:func:`~.pg_rollup.set_rollup_floor`), so queries answer that time from rollups or say
why they cannot. These calls are the whole coupling (:func:`_raw_floor`,
:func:`_rollup_floor`, :func:`_rolled_up_before`).

**Beside the writer.** A pass runs on a connection of its own; each statement is its own
transaction. The writer only inserts, compaction moves rows of recent hours: a row both
want waits for the other's commit, and a deleted row is simply gone for the second.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from shopfloor.errors import HistorianError
from shopfloor.server.historian import pg_disk_usage, pg_rollup, pg_schema, rollup_tables
from shopfloor.server.historian.retention_loop import RetentionLoop, RetentionReport
from shopfloor.server.historian.retention_policy import (
    DAY_NS,
    RetentionPolicy,
    cutoff_of,
    floor_day,
    group_by_cutoff,
)
from shopfloor.server.historian.rollup_tables import RollupTable

__all__ = ["PgRetention"]

logger = logging.getLogger(__name__)

_BLOCK_TABLES = pg_disk_usage.BLOCK_TABLES
_BLOCK_COLUMNS = ("tag_id", "block", "ts", "value", "quality", "text")


async def _all(
    con: psycopg.AsyncConnection[Any], query: str | sql.Composed, params: Any = None
) -> list[tuple[Any, ...]]:
    cur = await con.execute(query, params)
    return await cur.fetchall()


@dataclass(slots=True)
class _Deleted:
    """What deletes removed: rows, raw points, stored bytes."""

    rows: int = 0
    points: int = 0
    bytes: int = 0

    def add(self, rows: int, points: int, stored: int) -> None:
        self.rows += rows
        self.points += points
        self.bytes += stored


# ------------------------------------------------ the rollups' side (pg_rollup)
async def _raw_floor(con: psycopg.AsyncConnection[Any], tags: Sequence[int], floor: int) -> None:
    """Tell the rollups that raw points of ``tags`` before ``floor`` are gone (in the
    deleting transaction; blocks layout)."""
    if tags:
        await pg_rollup.set_raw_floor(con, list(tags), floor)


_LEVELS = {name: level for level, name in pg_schema.ROLLUP_TABLES.items()}


async def _rollup_floor(con: psycopg.AsyncConnection[Any], table: RollupTable, floor: int) -> None:
    """Tell the rollups that rows of their table before ``floor`` are gone."""
    level = _LEVELS.get(table.name)
    if level is not None:
        await pg_rollup.set_rollup_floor(con, level, floor)


async def _rolled_up_before(con: psycopg.AsyncConnection[Any]) -> int | None:
    """Raw points before this time are rolled up (None: every stored hour is)."""
    return await pg_rollup.rolled_up_before(con)


# ------------------------------------------------------------------ blocks layout
async def _delete_blocks(
    con: psycopg.AsyncConnection[Any],
    table: str,
    *,
    tags: Sequence[int] | None,
    lo: int,
    hi: int,
    out: _Deleted,
    floored: Sequence[int],
) -> None:
    """Delete the rows of ``tags`` (None: all) with a block in ``[lo, hi)`` and record the
    raw floor of ``floored``; one transaction."""
    size = pg_disk_usage.row_size_sql(_BLOCK_COLUMNS, "t")
    where: sql.Composable = sql.SQL("t.block >= %(lo)s AND t.block < %(hi)s")
    if tags is not None:
        where = sql.SQL("t.tag_id = ANY(%(tags)s) AND ") + where
    query = sql.SQL(
        "WITH d AS (DELETE FROM {} AS t WHERE {} RETURNING cardinality(t.ts) AS n, {} AS b) "
        "SELECT count(*), coalesce(sum(n), 0)::bigint, coalesce(sum(b), 0)::bigint FROM d"
    ).format(sql.Identifier(table), where, size)
    async with con.transaction():
        rows = await _all(con, query, {"tags": list(tags or []), "lo": lo, "hi": hi})
        await _raw_floor(con, floored, hi)
    out.add(int(rows[0][0]), int(rows[0][1]), int(rows[0][2]))


async def _oldest_blocks(
    con: psycopg.AsyncConnection[Any], table: str, tags: Sequence[int]
) -> dict[int, int]:
    """Each tag's oldest block (one index probe per tag), tags without rows left out."""
    rows = await _all(
        con,
        sql.SQL(
            "SELECT r.tag_id, (SELECT min(block) FROM {} AS t WHERE t.tag_id = r.tag_id) "
            "FROM unnest(%s::integer[]) AS r(tag_id)"
        ).format(sql.Identifier(table)),
        [list(tags)],
    )
    return {int(t): int(b) for t, b in rows if b is not None}


async def _raw_blocks(
    con: psycopg.AsyncConnection[Any], cutoffs: Mapping[int, int], out: _Deleted
) -> bool:
    """Delete every expired row, a day and a class of tags per statement; True if any.

    Only what the rollups hold: no cutoff goes past the day of the oldest hour still to
    roll up.
    """
    rolled = await _rolled_up_before(con)
    if rolled is not None:
        cutoffs = {t: min(c, floor_day(rolled)) for t, c in cutoffs.items()}
    touched = False
    for table in _BLOCK_TABLES:
        for cutoff, tags in group_by_cutoff(cutoffs).items():
            oldest = await _oldest_blocks(con, table, tags)
            if not oldest or min(oldest.values()) >= cutoff:
                continue
            day = floor_day(min(oldest.values()))
            while day < cutoff:
                before = out.rows
                due = [t for t in tags if t in oldest and oldest[t] < day + DAY_NS]
                await _delete_blocks(
                    con, table, tags=due, lo=day, hi=day + DAY_NS, out=out, floored=due
                )
                touched = touched or out.rows > before
                day += DAY_NS
    return touched


async def _oldest_raw_day(con: psycopg.AsyncConnection[Any], ids: Sequence[int]) -> int | None:
    found: list[int] = []
    for table in _BLOCK_TABLES:
        found += (await _oldest_blocks(con, table, ids)).values()
    return floor_day(min(found)) if found else None


async def _evict_blocks_day(
    con: psycopg.AsyncConnection[Any], day: int, out: _Deleted, every_tag: Sequence[int]
) -> None:
    for table in _BLOCK_TABLES:
        await _delete_blocks(
            con, table, tags=None, lo=day, hi=day + DAY_NS, out=out, floored=every_tag
        )


# -------------------------------------------------------------- version 1 partitions
async def _partition_points(con: psycopg.AsyncConnection[Any], day: int) -> tuple[int, int]:
    """Points and stored bytes of one partition (before it is dropped)."""
    name = sql.Identifier(pg_schema.partition_name(day))
    size = pg_disk_usage.row_size_sql(("ts", "value", "tag_id", "quality", "text"))
    rows = await _all(
        con, sql.SQL("SELECT count(*), coalesce(sum({}), 0)::bigint FROM {}").format(size, name)
    )
    return int(rows[0][0]), int(rows[0][1])


async def _drop_partition(
    con: psycopg.AsyncConnection[Any],
    day: int,
    out: _Deleted,
    dropped: Callable[[int], None],
) -> None:
    """Detach and drop a day's partition (its points counted first)."""
    points, stored = await _partition_points(con, day)
    name = sql.Identifier(pg_schema.partition_name(day))
    async with con.transaction():
        await con.execute(sql.SQL("ALTER TABLE points DETACH PARTITION {}").format(name))
        await con.execute(sql.SQL("DROP TABLE {}").format(name))
    dropped(day)
    out.add(1, points, stored)
    logger.info("historian retention: dropped partition %s", pg_schema.partition_name(day))


async def _raw_partitions(
    con: psycopg.AsyncConnection[Any],
    cutoffs: Mapping[int, int],
    every_tag: Sequence[int],
    *,
    today: int,
    out: _Deleted,
    dropped: Callable[[int], None],
) -> set[str]:
    """Drop the days no tag keeps; delete the rows of expired tags from the others."""
    vacuum: set[str] = set()
    all_expire = bool(every_tag) and all(t in cutoffs for t in every_tag)
    common = min(cutoffs.values()) if all_expire else None
    for day_no in sorted(await pg_schema.known_partitions(con)):
        day = day_no * DAY_NS
        if day >= today:
            break
        if common is not None and day + DAY_NS <= common:
            await _drop_partition(con, day_no, out, dropped)
            continue
        due = [t for t, c in cutoffs.items() if day + DAY_NS <= c]
        if not due:
            continue
        name = pg_schema.partition_name(day_no)
        size = pg_disk_usage.row_size_sql(("ts", "value", "tag_id", "quality", "text"), "p")
        rows = await _all(
            con,
            sql.SQL(
                "WITH d AS (DELETE FROM {} AS p WHERE p.tag_id = ANY(%s) RETURNING {} AS b) "
                "SELECT count(*), coalesce(sum(b), 0)::bigint FROM d"
            ).format(sql.Identifier(name), size),
            [sorted(due)],
        )
        if rows[0][0]:
            out.add(int(rows[0][0]), int(rows[0][0]), int(rows[0][1]))
            vacuum.add(name)
    return vacuum


# ---------------------------------------------------------------------- TimescaleDB
async def _raw_timescale(
    con: psycopg.AsyncConnection[Any],
    cutoffs: Mapping[int, int],
    every_tag: Sequence[int],
    out: _Deleted,
) -> None:
    """Untested here (no TimescaleDB on CI): drop_chunks for one cutoff, else DELETE."""
    classes = group_by_cutoff(cutoffs)
    if len(classes) == 1 and bool(every_tag) and all(t in cutoffs for t in every_tag):
        (cutoff,) = classes
        rows = await _all(
            con, "SELECT count(*) FROM drop_chunks('points', older_than => %s::bigint)", [cutoff]
        )
        out.add(int(rows[0][0]), 0, 0)
        return
    for cutoff, tags in classes.items():
        cur = await con.execute(
            "DELETE FROM points WHERE tag_id = ANY(%s) AND ts < %s", [list(tags), cutoff]
        )
        out.add(cur.rowcount, cur.rowcount, 0)


# -------------------------------------------------------------------------- rollups
def _time_bound(table: RollupTable, ns: int) -> sql.Composable:
    """``ns`` in the rollup's time column type (timestamps from epoch seconds, UTC)."""
    if not table.time_is_timestamp:
        return sql.Literal(ns)
    seconds = sql.Literal(ns // 10**9)
    if table.time_has_zone:
        return sql.SQL("to_timestamp({})").format(seconds)
    return sql.SQL("(to_timestamp({}) AT TIME ZONE 'UTC')").format(seconds)


async def _delete_rollups_before(
    con: psycopg.AsyncConnection[Any], table: RollupTable, ns: int
) -> int:
    """Delete a rollup table's rows before ``ns`` and record its floor; one transaction."""
    async with con.transaction():
        cur = await con.execute(
            sql.SQL("DELETE FROM {} WHERE {} < {}").format(
                sql.Identifier(table.name),
                sql.Identifier(table.time_column),
                _time_bound(table, ns),
            )
        )
        await _rollup_floor(con, table, ns)
    return max(cur.rowcount, 0)


async def _oldest_rollup(con: psycopg.AsyncConnection[Any], table: RollupTable) -> int | None:
    column = sql.Identifier(table.time_column)
    expr = (
        sql.SQL("(extract(epoch FROM min({})) * 1e9)::bigint").format(column)
        if table.time_is_timestamp
        else sql.SQL("min({})").format(column)
    )
    rows = await _all(con, sql.SQL("SELECT {} FROM {}").format(expr, sql.Identifier(table.name)))
    return None if rows[0][0] is None else int(rows[0][0])


async def _table_bytes_per_row(con: psycopg.AsyncConnection[Any], table: str) -> float:
    """Mean stored bytes of a rollup row (for what an eviction frees), from the estimate."""
    rows = await _all(con, sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table)))
    count = int(rows[0][0])
    if not count:
        return 0.0
    oid = await _all(con, "SELECT %s::regclass::oid", [table])
    live = await pg_disk_usage.table_live_bytes(con, int(oid[0][0]), table)
    return live / count


# ------------------------------------------------------------------------ the pass
@dataclass(slots=True)
class _Budget:
    raw_days: int = 0
    raw_points: int = 0
    rollup_days: int = 0
    used: int = 0
    over: bool = False


class PgRetention:
    """Runs retention passes of a PostgreSQL historian on a connection of its own.

    Args:
        policy: what to keep.
        connect: opens a connection (autocommit, search path set).
        schema_name: the historian's schema.
        layout: the storage layout (read when a pass starts: known once the writer opened).
        tag_ids: the committed tag catalog, path → id.
        partition_dropped: told the day number of each dropped daily partition (so the
            writer creates it again should a late point arrive).
        clock: the wall clock in UTC nanoseconds.
    """

    def __init__(
        self,
        policy: RetentionPolicy,
        *,
        connect: Callable[[], Awaitable[psycopg.AsyncConnection[Any]]],
        schema_name: str,
        layout: Callable[[], str],
        tag_ids: Callable[[], Mapping[str, int]],
        partition_dropped: Callable[[int], None],
        clock: Callable[[], int],
    ) -> None:
        self.loop = RetentionLoop(policy, self._pass, clock=clock)
        self._connect = connect
        self._schema = schema_name
        self._layout = layout
        self._tag_ids = tag_ids
        self._partition_dropped = partition_dropped
        self._con: psycopg.AsyncConnection[Any] | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start the periodic passes (the first one interval from now)."""
        self._task = asyncio.create_task(self.loop.run(), name="historian-pg-retention")

    async def apply(self) -> RetentionReport:
        """Run a pass now (see :meth:`RetentionLoop.apply`)."""
        return await self.loop.apply()

    async def _connection(self) -> psycopg.AsyncConnection[Any]:
        con = self._con
        if con is None or con.closed:
            con = self._con = await self._connect()
        return con

    async def _pass(self, now_ns: int) -> RetentionReport:
        try:
            con = await self._connection()
            return await self._run(con, now_ns)
        except psycopg.Error as err:
            await self._drop_connection()
            raise HistorianError(f"historian retention failed: {err}") from err

    async def _run(self, con: psycopg.AsyncConnection[Any], now_ns: int) -> RetentionReport:
        started = time.perf_counter()
        policy = self.loop.policy
        layout = self._layout()
        ids = sorted({int(i) for i in self._tag_ids().values()})
        cutoffs = policy.raw_cutoffs(self._tag_ids(), now_ns)
        today = floor_day(now_ns)
        raw = _Deleted()
        vacuum: set[str] = set()
        if cutoffs and layout == "blocks":
            if await _raw_blocks(con, cutoffs, raw):
                vacuum.update(_BLOCK_TABLES)
        elif cutoffs and layout == "partitioned":
            vacuum |= await _raw_partitions(
                con, cutoffs, ids, today=today, out=raw, dropped=self._partition_dropped
            )
        elif cutoffs and layout == "timescale":
            await _raw_timescale(con, cutoffs, ids, raw)
        tables = await rollup_tables.discover_postgres(con, self._schema)
        rollup_rows = 0
        for table in tables:
            keep = policy.rollup_keep_ns(table.kind)
            if keep is not None:
                deleted = await _delete_rollups_before(con, table, cutoff_of(now_ns, keep))
                if deleted:
                    rollup_rows += deleted
                    vacuum.add(table.name)
        budget = _Budget()
        await self._vacuum(con, vacuum)
        budget.used = await pg_disk_usage.live_bytes(con, self._schema)
        if policy.disk_budget_bytes is not None and budget.used > policy.disk_budget_bytes:
            await self._evict(
                con,
                policy.disk_budget_bytes,
                layout=layout,
                ids=ids,
                tables=tables,
                today=today,
                out=budget,
            )
        return RetentionReport(
            raw_points=raw.points,
            raw_units=raw.rows,
            rollup_rows=rollup_rows,
            evicted_raw_days=budget.raw_days,
            evicted_raw_points=budget.raw_points,
            evicted_rollup_days=budget.rollup_days,
            used_bytes=budget.used,
            over_budget=budget.over,
            seconds=time.perf_counter() - started,
        )

    async def _evict(
        self,
        con: psycopg.AsyncConnection[Any],
        limit: int,
        *,
        layout: str,
        ids: Sequence[int],
        tables: Sequence[RollupTable],
        today: int,
        out: _Budget,
    ) -> None:
        """Evict the oldest whole days until the live bytes are within ``limit``.

        Each eviction takes the bytes of the rows it deleted off the figure; after the
        VACUUM the figure is measured again (index upkeep may differ a little) and, if
        still over, eviction goes on from there.
        """
        while out.used > limit:
            vacuum: set[str] = set()
            while out.used > limit:
                freed = await self._evict_raw_day(con, layout, ids, today, out)
                if freed is not None:
                    vacuum |= set(_BLOCK_TABLES) if layout == "blocks" else set()
                else:
                    freed = await self._evict_rollup_day(con, tables, today, out, vacuum)
                if freed is None:
                    out.over = True
                    break
                out.used = max(0, out.used - freed)
            await self._vacuum(con, vacuum)
            out.used = await pg_disk_usage.live_bytes(con, self._schema)
            if out.over or not vacuum:
                out.over = out.used > limit
                break

    async def _evict_raw_day(
        self,
        con: psycopg.AsyncConnection[Any],
        layout: str,
        ids: Sequence[int],
        today: int,
        out: _Budget,
    ) -> int | None:
        """Evict the oldest raw day before today; the bytes it held, or None if none."""
        deleted = _Deleted()
        if layout == "blocks":
            day = await _oldest_raw_day(con, ids)
            if day is None or day >= today:
                return None
            await _evict_blocks_day(con, day, deleted, ids)
        elif layout == "partitioned":
            old = [d for d in sorted(await pg_schema.known_partitions(con)) if d * DAY_NS < today]
            if not old:
                return None
            day = old[0] * DAY_NS
            await _drop_partition(con, old[0], deleted, self._partition_dropped)
        else:  # timescale, untested here
            rows = await _all(con, "SELECT min(ts) FROM points")
            if rows[0][0] is None or floor_day(int(rows[0][0])) >= today:
                return None
            day = floor_day(int(rows[0][0]))
            before = await pg_disk_usage.live_bytes(con, self._schema)
            await _all(
                con, "SELECT drop_chunks('points', older_than => %s::bigint)", [day + DAY_NS]
            )
            deleted.bytes = before - await pg_disk_usage.live_bytes(con, self._schema)
        out.raw_days += 1
        out.raw_points += deleted.points
        logger.info("disk budget: evicted the raw points of day %s", _date(day))
        return deleted.bytes

    async def _evict_rollup_day(
        self,
        con: psycopg.AsyncConnection[Any],
        tables: Sequence[RollupTable],
        today: int,
        out: _Budget,
        vacuum: set[str],
    ) -> int | None:
        """Evict the oldest rollup day before today, finest kind first; bytes freed or None."""
        for kind in rollup_tables.KINDS:
            candidates: list[tuple[int, RollupTable]] = []
            for table in tables:
                if table.kind != kind:
                    continue
                oldest = await _oldest_rollup(con, table)
                if oldest is not None and floor_day(oldest) < today:
                    candidates.append((floor_day(oldest), table))
            if candidates:
                day, table = min(candidates, key=lambda c: (c[0], c[1].name))
                per_row = await _table_bytes_per_row(con, table.name)
                rows = await _delete_rollups_before(con, table, day + DAY_NS)
                vacuum.add(table.name)
                out.rollup_days += 1
                logger.info("disk budget: evicted day %s of %s", _date(day), table.name)
                return round(rows * per_row)
        return None

    @staticmethod
    async def _vacuum(con: psycopg.AsyncConnection[Any], tables: set[str]) -> None:
        """Plain VACUUM (never FULL): the space of deleted rows is reused, nothing is locked."""
        for table in sorted(tables):
            await con.execute(sql.SQL("VACUUM (ANALYZE) {}").format(sql.Identifier(table)))

    async def _drop_connection(self) -> None:
        con, self._con = self._con, None
        if con is not None:
            with contextlib.suppress(psycopg.Error):
                await con.close()

    async def close(self) -> None:
        """Stop the passes (a statement in flight is rolled back) and close the connection."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._drop_connection()


def _date(day_ns: int) -> str:
    return dt.datetime.fromtimestamp(day_ns // 10**9, tz=dt.UTC).date().isoformat()
