"""Several processes writing one PostgreSQL historian schema (``historian.shared = true``).

A single historian process keeps the tag catalog and the ingest ledger's index in memory
and is the schema's only writer (a session advisory lock, :data:`pg_schema.LOCK_CLASS`).
Scaling ingest out (``shopfloor ingest`` workers behind an MQTT shared subscription,
docs/scale-out.md) needs several writers, and a batch of one edge may reach any of them,
so neither the catalog nor the ledger can be trusted from memory. In shared mode:

* Each writer holds the same advisory lock **shared** (``pg_try_advisory_lock_shared``):
  shared writers coexist, while an exclusive historian (``shared = false``) or a restore
  (:mod:`.pg_backup`) is refused as long as any of them runs, and the other way round.
* Every commit transaction first takes a **transaction** advisory lock
  (:data:`COMMIT_LOCK_CLASS`): commits of one schema are serialised across processes.
  Under it the writer reads the tags other writers created since (:func:`new_tags`), so
  tag ids never collide, and asks the ``ingest_ledger`` table — not its memory — which of
  the commit's ``(edge, seq)`` are applied already (:func:`applied`). The check and the
  ledger insert are in the same transaction under the same lock, so two workers handed
  the same batch (a redelivery after a worker died) store it once.
* ``latest`` is only moved forward (:data:`UPSERT_LATEST_NEWER`): another writer may have
  stored newer values than this one's memory knows.
* Ledger rows are pruned by age only (:func:`prune`): per-edge low-water marks kept in
  one writer's memory mean nothing when it sees only a share of an edge's batches.

Why a lock and not optimistic inserts: the commits are large (thousands of points per
batch coalesced) and short; serialising them costs little next to the COPY itself, and
``bench/scale.py`` measures what it costs. A unique index on the ledger would also need a
migration of existing schemas; the lock needs none.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Final

import psycopg

from shopfloor.server.historian import pg_schema
from shopfloor.server.pg_locks import HISTORIAN_COMMIT

__all__ = [
    "COMMIT_LOCK_CLASS",
    "UPSERT_LATEST_NEWER",
    "Applied",
    "applied",
    "lock_commits",
    "lock_setup",
    "new_tags",
    "prune",
    "take_shared_lock",
    "unlock_setup",
]

COMMIT_LOCK_CLASS: Final = HISTORIAN_COMMIT
"""First key of the transaction advisory lock that serialises shared writers' commits."""

UPSERT_LATEST_NEWER: Final = (
    "INSERT INTO latest AS l SELECT * FROM unnest("
    "%s::integer[], %s::bigint[], %s::float8[], %s::integer[], %s::text[]) "
    "ON CONFLICT (tag_id) DO UPDATE SET ts = excluded.ts, value = excluded.value, "
    "quality = excluded.quality, text = excluded.text WHERE l.ts <= excluded.ts"
)
""":data:`pg_schema.UPSERT_LATEST`, but never replacing a newer value another writer stored."""

_APPLIED: Final = (
    "SELECT k.edge, k.seq FROM unnest(%s::text[], %s::bigint[]) AS k(edge, seq) "
    "WHERE EXISTS (SELECT 1 FROM ingest_ledger AS l WHERE l.edge = k.edge AND l.seq = k.seq) "
    "OR EXISTS (SELECT 1 FROM ingest_low_water AS w WHERE w.edge = k.edge "
    "AND k.seq <= w.low_water)"
)


class Applied:
    """The ``(edge, seq)`` pairs the database holds as applied (``seen`` for a commit plan)."""

    __slots__ = ("_keys",)

    def __init__(self, keys: Iterable[tuple[str, int]] = ()) -> None:
        self._keys = frozenset(keys)

    def seen(self, edge: str, seq: int) -> bool:
        """Whether ``(edge, seq)`` was committed before, by any writer."""
        return (edge, seq) in self._keys


async def take_shared_lock(con: psycopg.AsyncConnection[Any], schema_name: str) -> bool:
    """Take the schema's writer lock in shared mode; False while an exclusive writer holds it."""
    cur = await con.execute(
        "SELECT pg_try_advisory_lock_shared(%s, hashtext(%s))",
        [pg_schema.LOCK_CLASS, schema_name],
    )
    row = await cur.fetchone()
    return bool(row and row[0])


async def release_shared_lock(con: psycopg.AsyncConnection[Any], schema_name: str) -> None:
    """Give the shared writer lock back now, rather than when the server reaps the session."""
    await con.execute(
        "SELECT pg_advisory_unlock_shared(%s, hashtext(%s))", [pg_schema.LOCK_CLASS, schema_name]
    )


async def lock_setup(con: psycopg.AsyncConnection[Any], schema_name: str) -> None:
    """Wait for the commit lock at session level, for setting the schema up: shared writers
    starting together would otherwise race in ``CREATE ... IF NOT EXISTS`` (PostgreSQL
    checks the catalog's unique keys, not the ``IF NOT EXISTS``, under concurrency)."""
    await con.execute("SELECT pg_advisory_lock(%s, hashtext(%s))", [COMMIT_LOCK_CLASS, schema_name])


async def unlock_setup(con: psycopg.AsyncConnection[Any], schema_name: str) -> None:
    """Release :func:`lock_setup`."""
    await con.execute(
        "SELECT pg_advisory_unlock(%s, hashtext(%s))", [COMMIT_LOCK_CLASS, schema_name]
    )


async def lock_commits(con: psycopg.AsyncConnection[Any], schema_name: str) -> None:
    """Wait for the schema's commit lock; it is released when the transaction ends."""
    await con.execute(
        "SELECT pg_advisory_xact_lock(%s, hashtext(%s))", [COMMIT_LOCK_CLASS, schema_name]
    )


async def applied(con: psycopg.AsyncConnection[Any], keys: Sequence[tuple[str, int]]) -> Applied:
    """Which of ``keys`` the ledger holds (a row, or a seq at or below the edge's mark)."""
    if not keys:
        return Applied()
    cur = await con.execute(_APPLIED, [[k[0] for k in keys], [k[1] for k in keys]])
    return Applied((str(edge), int(seq)) for edge, seq in await cur.fetchall())


async def new_tags(con: psycopg.AsyncConnection[Any], from_id: int) -> list[tuple[Any, ...]]:
    """Rows of ``tags`` with an id at or above ``from_id`` (created by other writers)."""
    cur = await con.execute(
        "SELECT id, path, unit, description, data_type, eng_low, eng_high, states FROM tags "
        "WHERE id >= %s ORDER BY id",
        [from_id],
    )
    return await cur.fetchall()


async def prune(con: psycopg.AsyncConnection[Any], schema_name: str, *, cutoff_ns: int) -> int:
    """Delete ledger rows committed before ``cutoff_ns``, raising each edge's persisted mark
    past them first (one transaction, under the commit lock). Returns the rows deleted."""
    async with con.transaction():
        await lock_commits(con, schema_name)
        await con.execute(
            "INSERT INTO ingest_low_water AS w "
            "SELECT edge, max(seq) FROM ingest_ledger WHERE committed_at < %s GROUP BY edge "
            "ON CONFLICT (edge) DO UPDATE "
            "SET low_water = greatest(w.low_water, excluded.low_water)",
            [cutoff_ns],
        )
        cur = await con.execute("DELETE FROM ingest_ledger WHERE committed_at < %s", [cutoff_ns])
        return max(cur.rowcount, 0)
