"""The committed-points feed: the points some partition owner wants, in commit order.

Scaled out (docs/scale-out.md), a point is stored by whichever ingest worker the broker
handed its batch to, but its alarms must be evaluated by the one worker owning its
equipment's partition, exactly once, and on by a successor when that worker dies. The
historian therefore writes, **in the same transaction as the points**, a copy of the
points a *route* asks for into ``point_feed``: one row per partition and commit,
``(part, seq, tag_id[], ts[], value[], quality[])``. An owner reads its partition's rows
after its cursor and moves the cursor in the transaction that journals what the rows
caused (:mod:`shopfloor.server.rules.partitioned`); it deletes the rows it consumed.

Why this is exactly once:

* a batch is fed iff it is committed (same transaction), and a duplicate is not fed
  (the ledger's plan left it out);
* ``seq`` is drawn from a sequence *under the schema's commit lock*
  (:func:`~.pg_shared.lock_commits`), which serialises the commits of every shared writer,
  so a commit with a higher ``seq`` commits after every lower one: a reader that has seen
  ``seq`` = s has seen every committed row below s, and reading ``seq > cursor`` never
  skips a row that commits later.

**Bounded** (:class:`FeedBound`): with ``alarms.partitions`` set and no owner running
(only API servers taking batches over HTTP, or every worker stopped), nobody consumes the
feed. It keeps the rows of the last :data:`FEED_MAX_COMMITS` commits that fed anything;
older rows are deleted by the writers (policy **drop-oldest**, checked every
:data:`FEED_TRIM_EVERY` commits, for the partitions this writer fed, through the
primary key — no index of its own: ``CREATE INDEX IF NOT EXISTS`` locks the table at
every start, and that lock deadlocked with the owners' transactions), counted
(:attr:`FeedBound.dropped`) and logged once per process. Their points stay stored; only
their alarm evaluation is skipped — an owner starting later continues after its cursor
with the rows that are left.

The route is given by the composition root (the historian knows nothing of alarms): a
function from a tag path to the partitions that want it (none for most tags).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Final

import numpy as np
import psycopg

from shopfloor.model import PointBatch

__all__ = [
    "FEED_MAX_COMMITS",
    "FEED_TABLES",
    "FEED_TRIM_EVERY",
    "FeedBound",
    "FeedPoints",
    "FeedRoute",
    "feed_rows",
    "write_feed",
]

logger = logging.getLogger(__name__)

FEED_MAX_COMMITS: Final = 200_000
"""The feed keeps the rows of at most this many commits (``seq`` values): at a commit
every 0.2 s per worker and four workers, about 14 h without any owner running."""
FEED_TRIM_EVERY: Final = 64
"""A writer trims the feed when the ``seq`` it drew is a multiple of this."""

FeedRoute = Callable[[str], Sequence[int]]
"""Tag path → the partitions that want its points (empty: nobody)."""

FEED_TABLES: Final = (
    "CREATE SEQUENCE IF NOT EXISTS point_feed_seq",
    "CREATE TABLE IF NOT EXISTS point_feed ("
    " part integer NOT NULL, seq bigint NOT NULL, tag_id integer[] NOT NULL,"
    " ts bigint[] NOT NULL, value double precision[] NOT NULL, quality integer[] NOT NULL,"
    " PRIMARY KEY (part, seq))",
)
"""Created by a shared historian that has a route (under the schema's set-up lock)."""

_INSERT: Final = (
    "INSERT INTO point_feed (part, seq, tag_id, ts, value, quality) "
    "SELECT u.part, (SELECT nextval('point_feed_seq')), array_agg(u.tag_id ORDER BY u.n), "
    "array_agg(u.ts ORDER BY u.n), array_agg(u.value ORDER BY u.n), "
    "array_agg(u.quality ORDER BY u.n) "
    "FROM unnest(%s::integer[], %s::integer[], %s::bigint[], %s::float8[], %s::integer[]) "
    "WITH ORDINALITY AS u(part, tag_id, ts, value, quality, n) GROUP BY u.part "
    "RETURNING seq"
)
"""One statement, one round trip inside the serialised commit: the points flat with their
partition, grouped into one row per partition under one ``seq`` (an uncorrelated
sub-select is evaluated once)."""

FeedPoints = tuple[list[int], list[int], list[int], list[float], list[int]]
"""Flat columns: partition, tag id, ts, value, quality (a point once per partition)."""


def feed_rows(
    batches: Iterable[PointBatch], route: FeedRoute, ids: Mapping[str, int]
) -> FeedPoints:
    """The points of ``batches`` some partition wants, with that partition, in the
    batches' order. ``ids`` maps every path of the batches to its id."""
    chunks: list[tuple[np.ndarray[Any, Any], ...]] = []
    for batch in batches:
        for i, path in enumerate(batch.tags):
            targets = route(path)
            if not targets:
                continue
            mask = batch.tag_index == i
            n = int(mask.sum())
            if not n:
                continue
            ts, value, quality = batch.ts[mask], batch.value[mask], batch.quality[mask]
            for target in targets:
                chunks.append(
                    (
                        np.full(n, target, np.int64),
                        np.full(n, ids[path], np.int64),
                        ts,
                        value,
                        quality.view(np.int32),
                    )
                )
    if not chunks:
        return [], [], [], [], []
    part, tag_id, ts, value, quality = (np.concatenate([c[k] for c in chunks]) for k in range(5))
    return part.tolist(), tag_id.tolist(), ts.tolist(), value.tolist(), quality.tolist()


class FeedBound:
    """Keeps the feed to the rows of the last ``max_commits`` commits (drop-oldest).

    One per writer: it counts what this writer dropped and logs the first drop once.
    """

    def __init__(self, max_commits: int = FEED_MAX_COMMITS, every: int = FEED_TRIM_EVERY) -> None:
        if max_commits < 1 or every < 1:
            raise ValueError("max_commits and every must be >= 1")
        self.max_commits = max_commits
        self.every = every
        self.dropped = 0
        """Feed rows this writer deleted unread (their points' alarms not evaluated)."""
        self.parts: set[int] = set()
        """The partitions this writer fed (the ones it trims)."""

    async def trim(self, con: psycopg.AsyncConnection[Any], seq: int) -> int:
        """After drawing ``seq``: delete the rows of commits ``max_commits`` or more before
        it, every ``every`` seqs; how many were deleted."""
        if seq % self.every or not self.parts:
            return 0
        cur = await con.execute(
            "WITH gone AS (DELETE FROM point_feed WHERE part = ANY(%s) AND seq <= %s "
            "RETURNING 1) SELECT count(*) FROM gone",
            [sorted(self.parts), seq - self.max_commits],
        )
        row = await cur.fetchone()
        gone = int(row[0]) if row else 0
        if gone:
            if not self.dropped:
                logger.warning(
                    "committed-points feed: nobody consumed it for %d commits (is a "
                    "`shopfloor ingest` worker running?): dropping its oldest rows; their "
                    "points are stored, their alarms not evaluated (logged once)",
                    self.max_commits,
                )
            self.dropped += gone
        return gone


async def write_feed(
    con: psycopg.AsyncConnection[Any], points: FeedPoints, bound: FeedBound | None = None
) -> None:
    """Insert ``points`` as one row per partition under one new ``seq`` (call it under the
    commit lock, in the transaction that stores the points); then let ``bound`` trim."""
    if not points[0]:
        return
    cur = await con.execute(_INSERT, list(points))
    row = await cur.fetchone()
    if bound is not None and row is not None:
        bound.parts.update(set(points[0]))
        await bound.trim(con, int(row[0]))
