"""Every edge's status and figures in a shared PostgreSQL historian, for every API server.

Scaled out (docs/scale-out.md), an edge's status reports and batches reach whichever
ingest worker the broker deals them to (or whichever API server the load balancer sends
an HTTP edge to), and each process's :class:`~.edges.EdgeRegistry` and ingest ledger
know only what *it* took. So with ``historian.shared = true`` each process pushes what
it learned to one table, ``edge_status`` in the historian's schema, and the API servers
answer ``GET /api/v1/edges`` from it:

* **One row per edge**, upserted (``INSERT … ON CONFLICT``): the latest status report
  wins by its arrival time, ``last_seen`` only moves forward, the counters (batches,
  points, duplicates, future points) are *added* — each process pushes the increase
  since its last push — and the highest seq is the one of the outbox (ledger stream)
  committed to last.
* **Bounded**: :meth:`PgEdgeStore.prune` deletes the edges not heard from for the
  ingest ledger's retention (``historian.ledger_retention``, 7 days) and, beyond
  ``ingest.max_edges``, those heard from longest ago (counted as evicted). An edge that
  stopped reporting stays listed with its ``last_seen`` until then: that is how a gone
  edge shows as stale.
* **Not tracked scaled out**: the ledger's low-water mark and gaps. Each worker sees only
  a share of an edge's seqs, so its view of the gaps is meaningless; the edge's own
  status report (its outbox) says what is still to come.

:class:`SharedEdges` pushes every second (and before each listing, so a server shows
what it took itself at once), off the event loop; a database that cannot be reached is
logged once and the increases wait in memory (they are cumulative counters: nothing is
lost, the next push carries them).
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

import psycopg
from psycopg import sql

from shopfloor.errors import HistorianError
from shopfloor.model import now_ns
from shopfloor.server.historian.base import EdgeLedgerStats
from shopfloor.server.historian.pg_shared import COMMIT_LOCK_CLASS
from shopfloor.server.ingest.edges import EdgeRegistry
from shopfloor.wire import EDGE_ID_PATTERN, edge_of_stream

__all__ = ["EDGE_TABLE", "EdgeRow", "PgEdgeStore", "SharedEdges"]

logger = logging.getLogger(__name__)

_EDGE_ID: Final = re.compile(EDGE_ID_PATTERN)

EDGE_TABLE: Final = (
    "CREATE TABLE IF NOT EXISTS edge_status ("
    " edge text PRIMARY KEY, last_seen_ns bigint NOT NULL, status text, status_at_ns bigint,"
    " skew_s double precision, future_points bigint NOT NULL DEFAULT 0,"
    " batches bigint NOT NULL DEFAULT 0, points bigint NOT NULL DEFAULT 0,"
    " duplicates bigint NOT NULL DEFAULT 0, stream text, last_seq bigint,"
    " last_commit_ns bigint)"
)

_UPSERT: Final = (
    "INSERT INTO edge_status AS e (edge, last_seen_ns, status, status_at_ns, skew_s,"
    " future_points, batches, points, duplicates, stream, last_seq, last_commit_ns)"
    " SELECT * FROM unnest(%s::text[], %s::bigint[], %s::text[], %s::bigint[],"
    " %s::float8[], %s::bigint[], %s::bigint[], %s::bigint[], %s::bigint[], %s::text[],"
    " %s::bigint[], %s::bigint[])"
    " ON CONFLICT (edge) DO UPDATE SET"
    " last_seen_ns = GREATEST(e.last_seen_ns, excluded.last_seen_ns),"
    " status = CASE WHEN excluded.status_at_ns >= COALESCE(e.status_at_ns, 0)"
    " THEN excluded.status ELSE e.status END,"
    " status_at_ns = GREATEST(e.status_at_ns, excluded.status_at_ns),"
    " skew_s = CASE WHEN excluded.skew_s IS NOT NULL"
    " AND excluded.last_seen_ns >= e.last_seen_ns THEN excluded.skew_s"
    " ELSE COALESCE(e.skew_s, excluded.skew_s) END,"
    " future_points = e.future_points + excluded.future_points,"
    " batches = e.batches + excluded.batches,"
    " points = e.points + excluded.points,"
    " duplicates = e.duplicates + excluded.duplicates,"
    " stream = CASE WHEN excluded.last_commit_ns >= COALESCE(e.last_commit_ns, 0)"
    " THEN excluded.stream ELSE e.stream END,"
    " last_seq = CASE WHEN excluded.stream = e.stream"
    " THEN GREATEST(e.last_seq, excluded.last_seq)"
    " WHEN excluded.last_commit_ns >= COALESCE(e.last_commit_ns, 0) THEN excluded.last_seq"
    " ELSE e.last_seq END,"
    " last_commit_ns = GREATEST(e.last_commit_ns, excluded.last_commit_ns)"
)

_SELECT: Final = (
    "SELECT edge, last_seen_ns, status, status_at_ns, skew_s, future_points, batches,"
    " points, duplicates, last_seq, last_commit_ns FROM edge_status ORDER BY edge"
)

_PRUNE_OLD: Final = "DELETE FROM edge_status WHERE last_seen_ns < %s"
_PRUNE_MANY: Final = (
    "DELETE FROM edge_status WHERE edge IN (SELECT edge FROM edge_status"
    " ORDER BY last_seen_ns DESC, edge OFFSET %s)"
)

_PRUNE_EVERY: Final = 60
"""Pushes between two prunes (a minute at the default interval)."""


@dataclass(frozen=True, slots=True)
class EdgeRow:
    """One edge: as a process pushes it (counters are increases), or as the table holds
    it (counters are totals since the row was made).

    Attributes:
        edge: the edge id.
        last_seen_ns: when a process last heard from it (UTC ns).
        status: its latest status report, if any.
        status_at_ns: when that report arrived.
        skew_s: the clock skew the process that heard from it last measured.
        future_points, batches, points, duplicates: counters (see the class doc).
        stream: the ledger stream (outbox) committed to last, if any.
        last_seq: that stream's highest seq applied.
        last_commit_ns: when the edge's last batch was committed.
    """

    edge: str
    last_seen_ns: int
    status: Mapping[str, Any] | None = None
    status_at_ns: int | None = None
    skew_s: float | None = None
    future_points: int = 0
    batches: int = 0
    points: int = 0
    duplicates: int = 0
    stream: str | None = None
    last_seq: int | None = None
    last_commit_ns: int | None = None


class PgEdgeStore:
    """The ``edge_status`` table in ``schema`` of the database at ``dsn``.

    Blocking (psycopg's synchronous connection): call it through ``asyncio.to_thread``;
    a lock keeps one statement at a time on the connection. A lost connection is made
    again at the next call (and the table again if missing, e.g. after a restore).
    """

    def __init__(self, dsn: str, schema: str) -> None:
        self._dsn = dsn
        self.schema = schema
        self._con: psycopg.Connection[Any] | None = None
        self._lock = threading.Lock()

    def _connection(self) -> psycopg.Connection[Any]:
        con = self._con
        if con is not None and not con.closed:
            return con
        con = psycopg.connect(
            self._dsn, autocommit=True, application_name="shopfloor-edges", connect_timeout=10
        )
        try:
            con.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(self.schema)))
            with con.transaction():  # processes starting together would race in CREATE
                con.execute(
                    "SELECT pg_advisory_xact_lock(%s, hashtext(%s))",
                    [COMMIT_LOCK_CLASS, self.schema],
                )
                con.execute(EDGE_TABLE)
        except BaseException:
            con.close()
            raise
        self._con = con
        return con

    def _run(self, work: Callable[[psycopg.Connection[Any]], Any]) -> Any:
        with self._lock:
            try:
                return work(self._connection())
            except psycopg.Error:
                if self._con is not None:  # start afresh next time (the table too)
                    self._con.close()
                    self._con = None
                raise

    def upsert(self, rows: list[EdgeRow]) -> None:
        """Add what a process learned (one row per edge, increases as counters).

        Raises:
            psycopg.Error: the database cannot be reached or the statement failed.
        """
        if not rows:
            return
        columns: list[list[Any]] = [
            [r.edge for r in rows],
            [r.last_seen_ns for r in rows],
            [None if r.status is None else json.dumps(r.status) for r in rows],
            [r.status_at_ns for r in rows],
            [r.skew_s for r in rows],
            [r.future_points for r in rows],
            [r.batches for r in rows],
            [r.points for r in rows],
            [r.duplicates for r in rows],
            [r.stream for r in rows],
            [r.last_seq for r in rows],
            [r.last_commit_ns for r in rows],
        ]
        self._run(lambda con: con.execute(_UPSERT, columns))

    def read(self) -> list[EdgeRow]:
        """Every edge, sorted by id (totals as counters).

        Raises:
            psycopg.Error: the database cannot be reached.
        """
        fetched = self._run(lambda con: con.execute(_SELECT).fetchall())
        return [
            EdgeRow(
                edge=str(edge),
                last_seen_ns=int(seen),
                status=None if status is None else json.loads(status),
                status_at_ns=status_at,
                skew_s=skew,
                future_points=int(future),
                batches=int(batches),
                points=int(points),
                duplicates=int(duplicates),
                last_seq=last_seq,
                last_commit_ns=last_commit,
            )
            for (
                edge,
                seen,
                status,
                status_at,
                skew,
                future,
                batches,
                points,
                duplicates,
                last_seq,
                last_commit,
            ) in fetched
        ]

    def prune(self, *, older_than_ns: int, max_edges: int) -> int:
        """Forget edges not heard from since ``older_than_ns``, and all but the
        ``max_edges`` heard from last; return how many of the latter went.

        Raises:
            psycopg.Error: the database cannot be reached.
        """

        def work(con: psycopg.Connection[Any]) -> int:
            con.execute(_PRUNE_OLD, [older_than_ns])
            return con.execute(_PRUNE_MANY, [max_edges]).rowcount

        return int(self._run(work))

    def close(self) -> None:
        """Close the connection."""
        with self._lock:
            if self._con is not None:
                self._con.close()
                self._con = None


@dataclass(slots=True)
class _Pushed:
    """What one process already pushed of an edge or a ledger stream."""

    last_seen_ns: int = 0
    status_at_ns: int | None = None
    future_points: int = 0
    batches: int = 0
    points: int = 0
    duplicates: int = 0
    last_commit_ns: int | None = None


class SharedEdges:
    """Pushes this process's edges (registry and ledger) to ``store``; lists every
    process's.

    Args:
        store: the shared table.
        registry: this process's edges (status reports, last seen, skew).
        ledger: this process's ingest ledger figures by stream (the historian's
            ``ledger_stats``).
        max_age_s: edges not heard from for this long are deleted.
        max_edges: the most edges kept.
        interval_s: time between two pushes.
        clock: the wall clock in UTC ns.
    """

    def __init__(
        self,
        store: PgEdgeStore,
        registry: EdgeRegistry,
        ledger: Callable[[], Mapping[str, EdgeLedgerStats]],
        *,
        max_age_s: float,
        max_edges: int,
        interval_s: float = 1.0,
        clock: Callable[[], int] = now_ns,
    ) -> None:
        self.store = store
        self._registry = registry
        self._ledger = ledger
        self._max_age_ns = int(max_age_s * 1e9)
        self._max_edges = max_edges
        self._interval_s = interval_s
        self._clock = clock
        self._edges: dict[str, _Pushed] = {}
        self._streams: dict[str, _Pushed] = {}
        self._lock = asyncio.Lock()
        self._failing = False
        self._pushes = 0
        self.evicted = 0

    def _changes(self) -> tuple[list[EdgeRow], dict[str, _Pushed], dict[str, _Pushed]]:
        """The rows to push and what is pushed once they are (not applied yet)."""
        rows: dict[str, EdgeRow] = {}
        edges: dict[str, _Pushed] = {}
        streams: dict[str, _Pushed] = {}
        for view in self._registry.views():
            before = self._edges.get(view.edge, _Pushed())
            new_status = view.status_at_ns is not None and view.status_at_ns != before.status_at_ns
            # a record forgotten and made again starts its counter at 0
            future = view.future_points - before.future_points
            future = view.future_points if future < 0 else future
            if view.last_seen_ns == before.last_seen_ns and not new_status and not future:
                continue
            edges[view.edge] = _Pushed(
                last_seen_ns=view.last_seen_ns,
                status_at_ns=view.status_at_ns,
                future_points=view.future_points,
            )
            rows[view.edge] = EdgeRow(
                edge=view.edge,
                last_seen_ns=view.last_seen_ns,
                status=view.status if new_status else None,
                status_at_ns=view.status_at_ns if new_status else None,
                skew_s=view.skew_s,
                future_points=future,
            )
        for stream, stats in sorted(
            self._ledger().items(), key=lambda item: item[1].last_commit_ns or 0
        ):
            before = self._streams.get(stream, _Pushed())
            if (
                stats.batches == before.batches
                and stats.duplicates == before.duplicates
                and stats.last_commit_ns == before.last_commit_ns
            ):
                continue
            edge = edge_of_stream(stream)
            if not _EDGE_ID.match(edge):  # no edge (``import:…``)
                continue
            streams[stream] = _Pushed(
                batches=stats.batches,
                points=stats.points,
                duplicates=stats.duplicates,
                last_commit_ns=stats.last_commit_ns,
            )
            row = rows.get(edge) or EdgeRow(
                edge=edge, last_seen_ns=stats.last_commit_ns or self._clock()
            )
            committed = stats.last_commit_ns is not None
            later = committed and (stats.last_commit_ns or 0) >= (row.last_commit_ns or 0)
            rows[edge] = EdgeRow(
                edge=edge,
                last_seen_ns=max(row.last_seen_ns, stats.last_commit_ns or 0),
                status=row.status,
                status_at_ns=row.status_at_ns,
                skew_s=row.skew_s,
                future_points=row.future_points,
                batches=row.batches + stats.batches - before.batches,
                points=row.points + stats.points - before.points,
                duplicates=row.duplicates + stats.duplicates - before.duplicates,
                stream=stream if later else row.stream,
                last_seq=stats.last_seq if later else row.last_seq,
                last_commit_ns=stats.last_commit_ns if later else row.last_commit_ns,
            )
        return list(rows.values()), edges, streams

    async def push(self) -> bool:
        """Push what changed since the last push; whether the table is up to date.

        A failure is logged once (and its recovery); what was not pushed waits for
        the next push.
        """
        async with self._lock:
            rows, edges, streams = self._changes()
            self._pushes += 1
            prune = self._pushes % _PRUNE_EVERY == 1
            try:
                await asyncio.to_thread(self.store.upsert, rows)
                if prune:
                    self.evicted += await asyncio.to_thread(
                        self.store.prune,
                        older_than_ns=self._clock() - self._max_age_ns,
                        max_edges=self._max_edges,
                    )
            except psycopg.Error as err:
                if not self._failing:
                    self._failing = True
                    logger.error(
                        "the edges' status cannot be stored in %s (%s); retrying",
                        self.store.schema,
                        err,
                    )
                return False
            if self._failing:
                self._failing = False
                logger.info("the edges' status is stored in %s again", self.store.schema)
            self._edges.update(edges)
            self._streams.update(streams)
            return True

    async def rows(self) -> list[EdgeRow]:
        """Every process's edges, this one's pushed first.

        Raises:
            HistorianError: the table cannot be read.
        """
        await self.push()
        try:
            return await asyncio.to_thread(self.store.read)
        except psycopg.Error as err:
            raise HistorianError(f"the edges' status in {self.store.schema}: {err}") from err

    async def run(self) -> None:
        """Push every ``interval_s`` until cancelled."""
        while True:
            await self.push()
            await asyncio.sleep(self._interval_s)

    async def close(self) -> None:
        """Push what is left, then close the connection."""
        await self.push()
        await asyncio.to_thread(self.store.close)
