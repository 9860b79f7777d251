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

The route is given by the composition root (the historian knows nothing of alarms): a
function from a tag path to the partitions that want it (none for most tags).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Final

import numpy as np
import psycopg

from shopfloor.model import PointBatch

__all__ = ["FEED_TABLES", "FeedPoints", "FeedRoute", "feed_rows", "write_feed"]

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
    "WITH ORDINALITY AS u(part, tag_id, ts, value, quality, n) GROUP BY u.part"
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


async def write_feed(con: psycopg.AsyncConnection[Any], points: FeedPoints) -> None:
    """Insert ``points`` as one row per partition under one new ``seq`` (call it under the
    commit lock, in the transaction that stores the points)."""
    if points[0]:
        await con.execute(_INSERT, list(points))
