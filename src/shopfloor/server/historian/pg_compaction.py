"""Compaction of the PostgreSQL historian: closed hours moved into compressed block rows.

The writer stores each commit as segments in ``points_recent`` (a row per tag and hour
of the commit, uncompressed: see :mod:`~shopfloor.server.historian.pg_blocks`). Once an
hour is closed (``grace`` after its end), compaction moves all its segments into
``points_cold``, one row per tag and hour, arrays sorted by time and compressed by
PostgreSQL. A late point of an hour already compacted lands in ``points_recent`` and is
moved at the next pass as a second, small row of that hour: readers unnest every row of
a block, so nothing is merged and nothing rewritten.

**All or nothing.** Each chunk (the closed segments of a range of tags, at most
``chunk_points`` points) is one transaction: ``DELETE ... RETURNING`` hands the segments
to numpy, which sorts them by (tag, time) and encodes one row per tag and hour, copied
into ``points_cold`` before the commit. Only the rows that DELETE saw move; a reader's
statement sees the points before or after the commit, never both or neither; killed
midway (client, server, power), nothing is lost or stored twice. Sorting in numpy rather
than in SQL (``unnest``, ``ORDER BY``, ``array_agg``) measured three times faster: 1.1 s
instead of 3.3 s per million points, mostly ``unnest`` and an external sort.

**Rollups.** The same transaction writes the rollups of every hour it moves
(:func:`~shopfloor.server.historian.pg_rollup.build`): an hour's rollups are exact as
soon as its segments left ``points_recent``, and a late segment makes readers take that
hour from raw points until the next pass moves it and rebuilds the hour. With rollups
off, the moved hours are queued in ``rollup_todo`` instead and built once they are on.

**Not in the way.** Compaction runs on its own connection, beside the writer: ingest
goes on (it only inserts new segments; compaction only deletes old ones). After a pass,
``VACUUM points_recent`` makes the space of the moved segments reusable at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import psycopg
import pyarrow as pa

from shopfloor.errors import HistorianError
from shopfloor.model.points import Float64Array, Int32Array, Int64Array, UInt32Array
from shopfloor.server.historian import pg_blocks, pg_rollup, pg_schema
from shopfloor.server.historian.commit_plan import sort_order
from shopfloor.server.historian.compaction import CompactionReport, CompactionTotals
from shopfloor.server.historian.pg_blocks import BLOCK_NS
from shopfloor.server.historian.rollup import RollupSettings

__all__ = ["PgCompactor", "closed_before"]

logger = logging.getLogger(__name__)

_COUNT = (
    "SELECT tag_id, sum(cardinality(ts))::bigint FROM points_recent "
    "WHERE block < %(cutoff)s GROUP BY tag_id ORDER BY tag_id"
)

_TAKE = (
    "DELETE FROM points_recent"
    " WHERE block < %(cutoff)s AND tag_id BETWEEN %(first)s AND %(last)s"
    " RETURNING tag_id, ts, value, quality, text"
)
"""Take the closed segments of tags ``first..last`` (inside the move's transaction)."""


@dataclass(slots=True)
class _Taken:
    """Segments taken out of ``points_recent``, as flat columns in the order they came."""

    tag_id: Int32Array
    ts: Int64Array
    value: Float64Array
    quality: UInt32Array
    text: pa.Array | None


_ONE_DIM = b"\x00\x00\x00\x01"


def _column(raws: list[bytes], kind: str, counts: npt.NDArray[np.int64] | None) -> npt.NDArray[Any]:
    """The elements of binary 1-D arrays without NULLs, all joined, in one numpy pass.

    Every array is a 20-byte header (ndim 1, flags, type, count, lower bound) and a cell
    per element (length, value): the headers are cut off and the cells read at once.
    """
    big = np.dtype(kind)
    if any(raw[:4] != _ONE_DIM for raw in raws):
        raise HistorianError("a compacted segment holds an array that is not one-dimensional")
    cells = np.frombuffer(
        b"".join(memoryview(raw)[20:] for raw in raws), dtype=[("len", ">i4"), ("v", big)]
    )
    if np.any(cells["len"] != big.itemsize) or (
        counts is not None and int(counts.sum()) != len(cells)
    ):
        raise HistorianError("a compacted segment holds a NULL or a malformed array")
    return cells["v"].astype(big.newbyteorder("="))


def _decode(result: Any) -> _Taken:
    """The binary rows of :data:`_TAKE` as flat columns (a few steps per segment)."""
    rows = range(result.ntuples)
    if not rows:
        return _Taken(
            np.empty(0, np.int32),
            np.empty(0, np.int64),
            np.empty(0, np.float64),
            np.empty(0, np.uint32),
            None,
        )
    ts_raw = [result.get_value(i, 1) for i in rows]
    counts = np.fromiter(
        (int.from_bytes(raw[12:16], "big") for raw in ts_raw), dtype=np.int64, count=len(rows)
    )
    tags = np.frombuffer(b"".join(result.get_value(i, 0) for i in rows), dtype=">i4")
    texts = [result.get_value(i, 4) for i in rows]
    text = None
    if any(raw is not None for raw in texts):  # state tags: few, decoded one by one
        text = pa.concat_arrays(
            [
                pa.nulls(int(n), pa.string()) if raw is None else pg_schema.decode_text_array(raw)
                for raw, n in zip(texts, counts, strict=True)
            ]
        )
    return _Taken(
        np.repeat(tags.astype(np.int32), counts),
        _column(ts_raw, ">i8", counts),
        _column([result.get_value(i, 2) for i in rows], ">f8", counts),
        _column([result.get_value(i, 3) for i in rows], ">i4", counts).view(np.uint32),
        text,
    )


async def _move(
    con: psycopg.AsyncConnection[Any], params: dict[str, int], *, rollups: bool
) -> tuple[int, int, int]:
    """Move one chunk in one transaction; return (blocks written, points moved, rollup rows).

    The segments are deleted with ``RETURNING``, merged and sorted by numpy (a stable
    sort: of two points at one time the later write stays later) and copied back as one
    row per tag and block. Only the rows this DELETE saw are moved: a late segment
    committed meanwhile stays for the next pass.
    """
    async with con.transaction():
        async with con.cursor(binary=True) as cur:
            await cur.execute(_TAKE, params)
            taken = _decode(cur.pgresult)
        if not len(taken.ts):
            return 0, 0, 0
        order = sort_order(taken.tag_id, taken.ts)
        tag_id, ts = taken.tag_id[order], taken.ts[order]
        value, quality = taken.value[order], taken.quality[order]
        text = taken.text.take(pa.array(order)) if taken.text is not None else None
        stream = pg_blocks.encode_segments(tag_id, ts, value, quality, text, max_points=None)
        async with con.cursor() as cur, cur.copy(pg_blocks.COPY_COLD) as copy:
            await copy.write(stream)
        rows = 0
        if rollups:
            rows = await pg_rollup.build(con, tag_id, ts, value, quality)
        else:
            await pg_rollup.queue(con, tag_id, ts)
    return len(pg_blocks.segment_starts(tag_id, ts, None)), len(ts), rows


def closed_before(now_ns: int, grace_ns: int) -> int:
    """The first block start not closed at ``now_ns``: blocks below it ended ``grace`` ago."""
    limit = now_ns - grace_ns
    return limit - limit % BLOCK_NS


def _chunks(counts: list[tuple[int, int]], chunk_points: int) -> list[tuple[int, int]]:
    """Tag ranges ``(first, last)`` of at most ``chunk_points`` points (a bigger tag alone)."""
    out: list[tuple[int, int]] = []
    first = last = -1
    points = 0
    for tag, n in counts:
        if first >= 0 and points + n > chunk_points:
            out.append((first, last))
            first, points = -1, 0
        if first < 0:
            first = tag
        last = tag
        points += n
    if first >= 0:
        out.append((first, last))
    return out


class PgCompactor:
    """Runs compaction passes on a connection of its own, now and every ``interval_s``.

    Args:
        connect: opens a connection (autocommit, search path set).
        clock: the wall clock in UTC nanoseconds.
        interval_s: how often :meth:`run` compacts (None: only when asked).
        grace_ns: an hour is closed this long after it ended.
        chunk_points: the most points one statement moves.
        rollups: whether the moved hours' rollups are written (else queued).
    """

    def __init__(
        self,
        connect: Callable[[], Awaitable[psycopg.AsyncConnection[Any]]],
        *,
        clock: Callable[[], int],
        interval_s: float | None,
        grace_ns: int,
        chunk_points: int,
        rollups: RollupSettings | None = None,
    ) -> None:
        self._connect = connect
        self._rollups = (rollups or RollupSettings()).enabled
        self._clock = clock
        self._interval_s = interval_s
        self._grace_ns = grace_ns
        self._chunk_points = chunk_points
        self._con: psycopg.AsyncConnection[Any] | None = None
        self._lock = asyncio.Lock()
        self._failing = False
        self.totals = CompactionTotals()

    async def run(self) -> None:
        """Compact every ``interval_s`` until cancelled; a failure is logged, not fatal."""
        if self._interval_s is None:
            return
        while True:
            await asyncio.sleep(self._interval_s)
            try:
                await self.compact()
            except HistorianError as err:
                if not self._failing:
                    self._failing = True
                    logger.error("historian compaction failed; trying again later: %s", err)
            except Exception:  # the periodic job's supervisor: a bug must not end it silently
                logger.exception("historian compaction crashed; trying again later")
            else:
                if self._failing:
                    self._failing = False
                    logger.info("historian compaction works again")

    async def compact(self) -> CompactionReport:
        """Move every closed hour's segments into compact blocks now (one pass at a time).

        Raises:
            HistorianError: a chunk failed (it moved nothing; earlier chunks stay moved).
        """
        async with self._lock:
            started = time.perf_counter()
            cutoff = closed_before(self._clock(), self._grace_ns)
            points = blocks = steps = rollup_rows = rollup_steps = 0
            longest = 0.0
            try:
                con = await self._connection()
                cur = await con.execute(_COUNT, {"cutoff": cutoff})
                counts = [(int(t), int(n)) for t, n in await cur.fetchall()]
                for first, last in _chunks(counts, self._chunk_points):
                    step = time.perf_counter()
                    moved = await _move(
                        con,
                        {"cutoff": cutoff, "first": first, "last": last},
                        rollups=self._rollups,
                    )
                    blocks += moved[0]
                    points += moved[1]
                    rollup_rows += moved[2]
                    steps += 1
                    longest = max(longest, time.perf_counter() - step)
                if self._rollups:  # hours compacted before rollups existed, or while off
                    built = await pg_rollup.build_todo(
                        con, cutoff=cutoff, chunk_hours=max(1, self._chunk_points // 3600)
                    )
                    rollup_rows += built[0]
                    rollup_steps += built[1]
                if steps:
                    await con.execute("VACUUM points_recent")
            except psycopg.Error as err:
                await self._drop_connection()
                raise HistorianError(f"historian compaction failed: {err}") from err
            report = CompactionReport(
                points=points,
                ranges=blocks,
                steps=steps,
                seconds=time.perf_counter() - started,
                longest_step_s=longest,
                rollup_rows=rollup_rows,
                rollup_steps=rollup_steps,
            )
            self.totals.add(report)
            if steps:
                logger.info(
                    "historian compaction: %d points into %d blocks in %.1f s",
                    points,
                    blocks,
                    report.seconds,
                )
            return report

    async def _connection(self) -> psycopg.AsyncConnection[Any]:
        con = self._con
        if con is not None and not con.closed:
            return con
        con = await self._connect()
        self._con = con
        return con

    async def _drop_connection(self) -> None:
        con, self._con = self._con, None
        if con is not None:
            with contextlib.suppress(psycopg.Error):
                await con.close()

    async def close(self) -> None:
        """Close the connection (after the task running :meth:`run` was cancelled)."""
        async with self._lock:
            await self._drop_connection()
