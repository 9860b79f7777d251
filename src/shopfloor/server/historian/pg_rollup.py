"""Rollups of the PostgreSQL historian (blocks layout): tables, building and reading.

**Tables.** ``rollup_1m`` and ``rollup_1h`` hold one row per tag and UTC minute (hour)
with points, the cell state of :mod:`~shopfloor.server.historian.rollup`, keyed by
``(tag_id, bucket)``. ``rollup_todo`` lists ``(tag_id, block)`` hours whose rollups are
still to be built (hours compacted before rollups existed, or while they were off).
``raw_floor`` and ``rollup_meta`` record what retention deleted.

**Fresh or stale.** Compaction (:mod:`~shopfloor.server.historian.pg_compaction`) moves
a closed hour's segments from ``points_recent`` into ``points_cold`` and, in the same
transaction, writes that hour's rollups (:func:`build`): from the moved points, or from
all of the hour's cold rows when it held some already (late points of a compacted hour).
So an hour's rollups are exact exactly when none of its segments waits in
``points_recent`` and it is not in ``rollup_todo``; a reader checks both in its snapshot
(:func:`read_parts`) and reads raw points for the hours that fail, the open hours among
them. Nothing else needs to remember anything: killed midway, a transaction leaves all
or nothing.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import psycopg
import pyarrow as pa

from shopfloor.errors import HistorianError
from shopfloor.model.points import Float64Array, Int32Array, Int64Array, UInt32Array
from shopfloor.server.historian import pg_schema, planner, query
from shopfloor.server.historian.aggregate import Prior
from shopfloor.server.historian.pg_fetch import Fetch, Fetched
from shopfloor.server.historian.pg_schema import decode_array
from shopfloor.server.historian.planner import (
    NO_FLOOR,
    Parts,
    RawRange,
    RollupSpan,
    RollupUse,
    all_raw,
    check_raw_floor,
    drop_stale,
    merge_prior,
    raw_ranges,
)
from shopfloor.server.historian.rollup import (
    HOUR_NS,
    MINUTE_NS,
    Cells,
    cells_of_points,
    hour_cells,
)

__all__ = [
    "Read",
    "answer_buckets",
    "build",
    "build_todo",
    "queue",
    "read_parts",
    "rolled_up_before",
    "set_raw_floor",
    "set_rollup_floor",
]

logger = logging.getLogger(__name__)

TABLES = pg_schema.ROLLUP_TABLES
_FIELDS = pg_schema.ROLLUP_FIELDS
_NAMES = ", ".join(name for name, _, _ in _FIELDS)


# ------------------------------------------------------------------------ writing
_COPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + b"\x00" * 8
_COPY_TRAILER = b"\xff\xff"
_ROW = np.dtype(
    [("fields", ">i2")]
    + [item for name, _, kind in _FIELDS for item in ((f"{name}_len", ">i4"), (name, kind))]
)


def _encode(cells: Cells) -> bytes:
    """Cells (``tag`` a tag id) as a binary COPY stream of rollup rows (one numpy pass)."""
    rows = np.empty(len(cells), dtype=_ROW)
    rows["fields"] = len(_FIELDS)
    columns = cells.columns()
    columns["tag_id"], columns["bucket"] = cells.tag, cells.start
    for name, _, kind in _FIELDS:
        rows[f"{name}_len"] = np.dtype(kind).itemsize
        rows[name] = columns[name]
    return _COPY_HEADER + rows.tobytes() + _COPY_TRAILER


def _minute_edges(blocks: Int64Array) -> Int64Array:
    """The minute edges of every distinct hour in ``blocks``."""
    hours = np.unique(blocks)
    steps = np.arange(61, dtype=np.int64) * MINUTE_NS
    edges: Int64Array = np.unique((hours[:, None] + steps[None, :]).ravel())
    return edges


async def _write(
    con: psycopg.AsyncConnection[Any], tags: Int32Array, blocks: Int64Array, minutes: Cells
) -> int:
    """Replace the rollups of the ``(tag, block)`` hours (inside the caller's transaction)."""
    pairs = [tags.tolist(), blocks.tolist()]
    await con.execute(
        "DELETE FROM rollup_1m AS r USING unnest(%s::int4[], %s::int8[]) AS d(tag_id, block) "
        f"WHERE r.tag_id = d.tag_id AND r.bucket >= d.block AND r.bucket < d.block + {HOUR_NS}",
        pairs,
    )
    await con.execute(
        "DELETE FROM rollup_1h AS r USING unnest(%s::int4[], %s::int8[]) AS d(tag_id, block) "
        "WHERE r.tag_id = d.tag_id AND r.bucket = d.block",
        pairs,
    )
    await con.execute(
        "DELETE FROM rollup_todo AS r USING unnest(%s::int4[], %s::int8[]) AS d(tag_id, block) "
        "WHERE r.tag_id = d.tag_id AND r.block = d.block",
        pairs,
    )
    hours = hour_cells(minutes)
    for level, cells in ((MINUTE_NS, minutes), (HOUR_NS, hours)):
        if len(cells):
            async with (
                con.cursor() as cur,
                cur.copy(f"COPY {TABLES[level]} ({_NAMES}) FROM STDIN (FORMAT BINARY)") as copy,
            ):
                await copy.write(_encode(cells))
    return len(minutes) + len(hours)


def _pairs(tag_id: Int32Array, ts: Int64Array) -> tuple[Int32Array, Int64Array]:
    """The distinct ``(tag, hour)`` pairs of points, sorted."""
    key = np.unique((ts // HOUR_NS << 32) | tag_id.astype(np.int64))
    return (key & 0xFFFFFFFF).astype(np.int32), (key >> 32) * HOUR_NS


async def _cold_points(
    con: psycopg.AsyncConnection[Any], tags: Int32Array, blocks: Int64Array
) -> tuple[Int32Array, Int64Array, Float64Array, UInt32Array]:
    """Every point of the ``(tag, block)`` hours in ``points_cold``, as columns."""
    row = await _one_row(
        con,
        "SELECT array_agg(u.tag_id), array_agg(u.ts), array_agg(u.value), "
        "array_agg(u.quality) FROM (SELECT c.tag_id, x.ts, x.value, x.quality "
        "FROM unnest(%(tags)s::int4[], %(blocks)s::int8[]) AS d(tag_id, block) "
        "JOIN points_cold AS c ON c.tag_id = d.tag_id AND c.block = d.block "
        "CROSS JOIN LATERAL unnest(c.ts, c.value, c.quality) AS x(ts, value, quality)) AS u",
        {"tags": tags.tolist(), "blocks": blocks.tolist()},
    )
    return (
        decode_array(row[0], ">i4"),
        decode_array(row[1], ">i8"),
        decode_array(row[2], ">f8"),
        decode_array(row[3], ">i4").view(np.uint32),
    )


async def build(
    con: psycopg.AsyncConnection[Any],
    tag_id: Int32Array,
    ts: Int64Array,
    value: Float64Array,
    quality: UInt32Array,
) -> int:
    """Write the rollups of every hour a compaction step moves (inside its transaction).

    The points are those moved; an hour that already had cold rows (late points) is read
    whole from ``points_cold``, which holds the moved rows too by now. Returns the rows
    written.
    """
    if not len(ts):
        return 0
    tags, blocks = _pairs(tag_id, ts)
    kept = await _above_floors(con, tags, blocks)
    if not kept.all():  # hours retention deleted: their rollups stay as they are
        inside = np.isin(_keys(tag_id, ts - ts % HOUR_NS), _keys(tags[kept], blocks[kept]))
        tag_id, ts, value, quality = tag_id[inside], ts[inside], value[inside], quality[inside]
        tags, blocks = tags[kept], blocks[kept]
        if not len(ts):
            return 0
    async with con.cursor() as cur:
        await cur.execute(
            "SELECT c.tag_id, c.block FROM unnest(%s::int4[], %s::int8[]) AS d(tag_id, block) "
            "JOIN points_cold AS c ON c.tag_id = d.tag_id AND c.block = d.block "
            "GROUP BY c.tag_id, c.block HAVING count(*) > 1",
            [tags.tolist(), blocks.tolist()],
        )
        older = await cur.fetchall()
    if older:
        old_tags = np.array([r[0] for r in older], np.int32)
        old_blocks = np.array([r[1] for r in older], np.int64)
        key = (ts // HOUR_NS << 32) | tag_id.astype(np.int64)
        keep = ~np.isin(key, (old_blocks // HOUR_NS << 32) | old_tags.astype(np.int64))
        more = await _cold_points(con, old_tags, old_blocks)
        tag_id = np.concatenate([tag_id[keep], more[0]])
        ts = np.concatenate([ts[keep], more[1]])
        value = np.concatenate([value[keep], more[2]])
        quality = np.concatenate([quality[keep], more[3]])
    minutes = cells_of_points(tag_id, ts, value, quality, _minute_edges(blocks))
    return await _write(con, tags, blocks, minutes)


def _keys(tags: Int32Array, blocks: Int64Array) -> Int64Array:
    key: Int64Array = (blocks // HOUR_NS << 32) | tags.astype(np.int64)
    return key


async def _above_floors(
    con: psycopg.AsyncConnection[Any], tags: Int32Array, blocks: Int64Array
) -> npt.NDArray[np.bool_]:
    """Which ``(tag, block)`` hours still have their raw points (retention deleted none of
    them): only those can be rolled up again. A point arriving after its hour was deleted
    is not rolled up (the hour would lose what was deleted)."""
    cur = await con.execute(
        "SELECT tag_id, floor_ns FROM raw_floor WHERE tag_id = ANY(%s::int4[])",
        [np.unique(tags).tolist()],
    )
    floors = dict(await cur.fetchall())
    if not floors:
        return np.ones(len(tags), np.bool_)
    floor = np.array([floors.get(int(t), NO_FLOOR) for t in tags.tolist()], np.int64)
    kept: npt.NDArray[np.bool_] = blocks >= floor
    return kept


async def queue(con: psycopg.AsyncConnection[Any], tag_id: Int32Array, ts: Int64Array) -> None:
    """Queue the hours of moved points in ``rollup_todo`` (rollups off; in the step)."""
    if len(ts):
        tags, blocks = _pairs(tag_id, ts)
        await con.execute(
            "INSERT INTO rollup_todo SELECT * FROM unnest(%s::int4[], %s::int8[])",
            [tags.tolist(), blocks.tolist()],
        )


async def build_todo(
    con: psycopg.AsyncConnection[Any], *, cutoff: int, chunk_hours: int
) -> tuple[int, int]:
    """Build the queued hours that are compacted (closed, nothing in ``points_recent``),
    ``chunk_hours`` per transaction; return (rows written, transactions)."""
    rows = steps = 0
    while True:
        async with con.transaction():
            cur = await con.execute(
                "SELECT DISTINCT t.tag_id, t.block FROM rollup_todo AS t WHERE t.block < %s "
                "AND NOT EXISTS (SELECT 1 FROM points_recent AS p "
                "WHERE p.tag_id = t.tag_id AND p.block = t.block) "
                "ORDER BY t.block, t.tag_id LIMIT %s",
                [cutoff, chunk_hours],
            )
            found = await cur.fetchall()
            if not found:
                return rows, steps
            tags = np.array([r[0] for r in found], np.int32)
            blocks = np.array([r[1] for r in found], np.int64)
            kept = await _above_floors(con, tags, blocks)
            if not kept.all():  # deleted by retention: forget them, keep their rollups
                await con.execute(
                    "DELETE FROM rollup_todo AS r USING unnest(%s::int4[], %s::int8[]) "
                    "AS d(tag_id, block) WHERE r.tag_id = d.tag_id AND r.block = d.block",
                    [tags[~kept].tolist(), blocks[~kept].tolist()],
                )
                tags, blocks = tags[kept], blocks[kept]
                if not len(tags):
                    steps += 1
                    continue
            points = await _cold_points(con, tags, blocks)
            minutes = cells_of_points(*points, _minute_edges(blocks))
            rows += await _write(con, tags, blocks, minutes)
            steps += 1


# ------------------------------------------------------------------------ retention
async def set_raw_floor(
    con: psycopg.AsyncConnection[Any], tag_ids: list[int], floor_ns: int
) -> None:
    """Record that raw points of ``tag_ids`` before ``floor_ns`` are deleted (for
    retention, in its deleting transaction): queries answer that time from rollups or
    refuse it by name."""
    await con.execute(
        "INSERT INTO raw_floor SELECT unnest(%s::int4[]), %s "
        "ON CONFLICT (tag_id) DO UPDATE SET floor_ns = greatest(raw_floor.floor_ns, "
        "excluded.floor_ns)",
        [tag_ids, floor_ns],
    )


async def set_rollup_floor(con: psycopg.AsyncConnection[Any], level: int, floor_ns: int) -> None:
    """Record that ``level`` rollups before ``floor_ns`` are deleted (for retention)."""
    await con.execute(
        "INSERT INTO rollup_meta VALUES (%s, %s) ON CONFLICT (key) DO UPDATE "
        "SET value = greatest(rollup_meta.value, excluded.value)",
        [f"floor:{TABLES[level]}", floor_ns],
    )


async def rolled_up_before(con: psycopg.AsyncConnection[Any]) -> int | None:
    """Raw points before this time may be deleted without losing an answer: every hour
    before it is compacted and rolled up. None: nothing waits (every stored hour is)."""
    cur = await con.execute(
        "SELECT least((SELECT min(block) FROM points_recent), (SELECT min(block) FROM rollup_todo))"
    )
    row = await cur.fetchone()
    return None if row is None or row[0] is None else int(row[0])


# ------------------------------------------------------------------------ reading
_STALE = (
    "SELECT array_agg(tag_id), array_agg(block) FROM ("
    "SELECT DISTINCT tag_id, block FROM points_recent WHERE tag_id = ANY(%(ids)s::int4[]) "
    "AND block >= %(lo)s AND block < %(hi)s UNION SELECT tag_id, block FROM rollup_todo "
    "WHERE tag_id = ANY(%(ids)s::int4[]) AND block >= %(lo)s AND block < %(hi)s) AS s"
)
_META = (
    "SELECT (SELECT value FROM rollup_meta WHERE key = 'floor:rollup_1h'), "
    "(SELECT value FROM rollup_meta WHERE key = 'floor:rollup_1m'), "
    "(SELECT count(*) FROM raw_floor WHERE tag_id = ANY(%(ids)s::int4[]))"
)


def _latest_cell(where: str) -> str:
    """Per tag with a raw floor, its latest rollup cell before the range (1-minute or
    1-hour rows, whichever ends later), each an index lookup."""
    branches = [
        f"(SELECT bucket + {level} AS cell_end, hold, last_ts, last_v FROM {table} "
        f"WHERE tag_id = u.id AND bucket <= %(start)s - {level}{where} "
        "ORDER BY bucket DESC LIMIT 1)"
        for level, table in TABLES.items()
    ]
    return (
        "SELECT array_agg(u.i), array_agg(c.cell_end), array_agg(c.hold), "
        "array_agg(c.last_ts), array_agg(c.last_v) "
        "FROM unnest(%(floor_ids)s::int4[]) WITH ORDINALITY AS u(id, i) CROSS JOIN LATERAL ("
        f"SELECT * FROM ({' UNION ALL '.join(branches)}) AS b "
        "ORDER BY cell_end DESC LIMIT 1) AS c"
    )


_ROLLUP_PRIOR = (
    f"SELECT * FROM ({_latest_cell('')}) AS p_last CROSS JOIN ({_latest_cell(' AND n > 0')}) "
    "AS p_good"
)
"""The value in force (``hold``) and a counter's baseline (``last_v``) before the range,
for tags whose older raw points retention deleted."""


def _rollups_sql(table: str) -> str:
    arrays = ", ".join(f"array_agg({name})" for name, _, _ in _FIELDS)
    return (
        f"SELECT {arrays} FROM {table} WHERE tag_id = ANY(%(ids)s::int4[]) "
        "AND bucket >= %(r_lo)s AND bucket < %(r_hi)s"
    )


@dataclass(frozen=True, slots=True)
class Read:
    """What :func:`read_parts` fetched, decoded by :meth:`parts` (on a worker thread)."""

    fetch: Fetch
    row: list[bytes | None]
    span: RollupSpan
    stale_tag: npt.NDArray[np.intp]
    stale_hour: Int64Array
    ranges: list[RawRange]
    floor_ids: list[int]
    """Tags whose raw points retention deleted before some time (their prior may be in
    the rollups: the row's last cells)."""

    def parts(self, plan: query.BucketPlan) -> tuple[Parts, Fetched]:
        """The rollup cells and raw points for :func:`~.planner.answer`.

        Raises:
            PayloadError: raw points the answer needs were deleted by retention.
        """
        fetched = self.fetch.decode(self.row)
        check_raw_floor(self.ranges, fetched.floors, plan.paths)
        rest = fetched.rest
        if self.floor_ids:
            if fetched.prior is not None:
                self._prior_from_rollups(fetched, rest[-10:])
            rest = rest[:-10]
        arrays = rest[-len(_FIELDS) :]
        columns: dict[str, npt.NDArray[Any]] = {
            name: decode_array(raw, kind)
            for (name, _, kind), raw in zip(_FIELDS, arrays, strict=True)
        }
        tag_ids = self.fetch.tag_ids
        lut = np.full(int(tag_ids.max()) + 1, -1, np.intp)
        lut[tag_ids] = np.arange(len(tag_ids))
        columns["tag"] = lut[columns["tag_id"]]
        columns["start"] = columns["bucket"]
        columns["end"] = columns["bucket"] + self.span.level
        cells = Cells.from_columns(columns)
        cells = drop_stale(cells, self.stale_tag, self.stale_hour, len(tag_ids))
        parts = Parts(self.span, cells, fetched.points, self.ranges, len(columns["bucket"]))
        return parts, fetched

    def _prior_from_rollups(self, fetched: Fetched, cells: list[bytes | None]) -> None:
        """Take the rollups' prior where the raw one is older than the tag's floor."""
        prior = fetched.prior
        assert prior is not None
        lut = np.full(int(self.fetch.tag_ids.max()) + 1, -1, np.intp)
        lut[self.fetch.tag_ids] = np.arange(len(self.fetch.tag_ids))
        picked = lut[np.asarray(self.floor_ids, np.int64)]
        found = Prior.nothing(len(picked))
        for offset, good in ((0, False), (5, True)):
            at = decode_array(cells[offset], ">i8").astype(np.intp) - 1
            if good:
                found.has_good[at] = True
                found.good_ts[at] = decode_array(cells[offset + 3], ">i8")
                found.good_value[at] = decode_array(cells[offset + 4], ">f8")
            else:
                hold = decode_array(cells[offset + 2], ">f8")
                found.has_last[at] = True
                found.last_ts[at] = decode_array(cells[offset + 1], ">i8")
                found.last_value[at] = hold
                found.last_quality[at] = np.where(np.isnan(hold), _BAD, 0).astype(np.uint32)
        floors = fetched.floors[picked]
        need_last = ~prior.has_last[picked] | (prior.last_ts[picked] < floors)
        need_good = ~prior.has_good[picked] | (prior.good_ts[picked] < floors)
        merge_prior(prior, found, picked, last=need_last, good=need_good)


_BAD = 0x80000000


async def read_parts(
    con: psycopg.AsyncConnection[Any],
    tag_ids: Int64Array,
    plan: query.BucketPlan,
    candidates: list[RollupSpan],
) -> Read | None:
    """Read what ``plan`` needs from rollups and raw points in one snapshot, or None when
    rollups cover none of its range (then read raw points as usual)."""
    ids = [int(i) for i in tag_ids]
    widest = min(c.start for c in candidates), max(c.end for c in candidates)
    async with con.transaction():
        await con.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        cur = await con.execute(_META, {"ids": ids})
        meta = await cur.fetchone()
        assert meta is not None
        floors = {HOUR_NS: meta[0], MINUTE_NS: meta[1]}
        floor_ids: list[int] = []
        if meta[2] and (plan.prior_last or plan.prior_good):
            cur = await con.execute(
                "SELECT tag_id FROM raw_floor WHERE tag_id = ANY(%s::int4[]) ORDER BY tag_id",
                [ids],
            )
            floor_ids = [int(r[0]) for r in await cur.fetchall()]
        chosen = None
        for span in candidates:
            start, floor = span.start, floors.get(span.level)
            if floor is not None:
                start = max(start, -(-int(floor) // span.level) * span.level)
            if span.end > start:
                chosen = RollupSpan(span.level, start, span.end)
                break
        if chosen is None:
            return None
        params = {"ids": ids, "lo": widest[0] - widest[0] % HOUR_NS, "hi": widest[1]}
        stale = await _one_row(con, _STALE, params)
        lut = np.full(int(tag_ids.max()) + 1, -1, np.intp)
        lut[tag_ids] = np.arange(len(tag_ids))
        stale_tag = lut[decode_array(stale[0], ">i4")]
        stale_hour = decode_array(stale[1], ">i8")
        keep = (stale_hour + HOUR_NS > chosen.start) & (stale_hour < chosen.end)
        stale_tag, stale_hour = stale_tag[keep], stale_hour[keep]
        ranges = raw_ranges(plan, chosen, stale_tag, stale_hour)
        if not meta[2] and all_raw(plan, ranges):  # all stale, no raw deleted: the raw path
            return None
        fetch = Fetch(
            tag_ids,
            plan.start_ns,
            plan.end_ns,
            prior_last=plan.prior_last,
            prior_good=plan.prior_good,
            ranges=tuple((r.tags, r.start, r.end) for r in ranges),
            floors=True,
        )
        statement = (
            fetch.statement() + f" CROSS JOIN ({_rollups_sql(TABLES[chosen.level])}) AS q_rollups"
        )
        if floor_ids:
            statement += f" CROSS JOIN ({_ROLLUP_PRIOR}) AS q_prior"
        params = {
            **fetch.params(),
            "r_lo": chosen.start,
            "r_hi": chosen.end,
            "floor_ids": floor_ids,
        }
        row = await _one_row(con, statement, params)
    return Read(fetch, row, chosen, stale_tag, stale_hour, ranges, floor_ids)


async def _one_row(
    con: psycopg.AsyncConnection[Any], statement: str, params: dict[str, Any]
) -> list[bytes | None]:
    async with con.cursor(binary=True) as cur:
        await cur.execute(statement, params)
        result = cur.pgresult
        if result is None or result.ntuples != 1:
            raise HistorianError("a historian query returned no row")
        return [result.get_value(0, i) for i in range(result.nfields)]


async def answer_buckets(
    connection: Callable[[], AbstractAsyncContextManager[psycopg.AsyncConnection[Any]]],
    tag_ids: Int64Array,
    plan: query.BucketPlan,
    *,
    rollups: RollupUse | None,
    blocks: bool,
) -> pa.Table:
    """Answer a bucketed query: from rollups where they are exact (``rollups``, counting
    their use; blocks layout only), from raw points otherwise.

    Raises:
        HistorianError: the database failed.
        PayloadError: the answer needs raw points that retention deleted.
    """
    if plan.empty:
        return plan.empty_answer()
    candidates = planner.spans(plan) if rollups is not None and blocks else []
    read: Read | None = None
    fetch = Fetch(
        tag_ids,
        plan.start_ns,
        plan.end_ns,
        prior_last=plan.prior_last,
        prior_good=plan.prior_good,
        floors=blocks,
    )
    try:
        async with connection() as con:
            if candidates:
                read = await read_parts(con, tag_ids, plan, candidates)
            if read is None:
                row = await _one_row(con, fetch.statement(), fetch.params())
    except psycopg.Error as err:
        raise HistorianError(f"historian read failed: {err}") from err

    def from_rollups() -> pa.Table:
        assert read is not None
        assert rollups is not None
        parts, fetched = read.parts(plan)
        rollups.count(parts.rollup_rows)
        return planner.answer(plan, parts, fetched.prior)

    def from_raw() -> pa.Table:
        fetched = fetch.decode(row)
        every = np.arange(len(tag_ids), dtype=np.intp)
        whole = [RawRange(plan.start_ns, plan.end_ns, every)]
        check_raw_floor(whole, fetched.floors, plan.paths)
        return plan.answer(fetched.points, fetched.prior)

    return await asyncio.to_thread(from_rollups if read is not None else from_raw)
