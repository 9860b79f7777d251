"""The analytics store in a shared PostgreSQL historian's schema, for several API servers.

With ``historian.shared = true`` every ``shopfloor server`` behind the load balancer
reads and writes the same stored OEE and energy hours and the same operator reasons
(tables ``analytics_*`` beside the historian's), so a reason assigned through one server
is in every server's stop list, Pareto and OEE, and an hour stored by one is not
computed again by the others.

Writes of one machine are serialised across processes by a transaction advisory lock
(:data:`ANALYTICS_LOCK_CLASS`, the machine's path): replacing an hour (delete its
slices, insert the new ones) never interleaves with another server storing or
forgetting the same machine's hours, and the upserts (``INSERT … ON CONFLICT``) make
storing an hour twice leave it once. Which process computed an hour does not matter.

Blocking (psycopg's synchronous connection, like :mod:`~..rules.pg_journal`): call it
from one thread, the :class:`~.service.Analytics` thread.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Final, TypeVar

import psycopg
from psycopg import sql

from shopfloor.server.analytics.energy import ENERGY_COMPONENTS, EnergySlices
from shopfloor.server.analytics.oee import COMPONENTS, HOUR_NS, Slices
from shopfloor.server.analytics.store_base import (
    GROUP_KEYS,
    KINDS,
    AnalyticsStoreError,
    GroupSums,
    ReasonAssignment,
    slice_rows,
)
from shopfloor.server.historian.pg_shared import COMMIT_LOCK_CLASS
from shopfloor.server.pg_locks import ANALYTICS_MACHINE

__all__ = ["ANALYTICS_LOCK_CLASS", "ANALYTICS_TABLES", "PgAnalyticsStore"]

T = TypeVar("T")

ANALYTICS_LOCK_CLASS: Final = ANALYTICS_MACHINE
"""First key of the per-machine transaction advisory lock (second: ``hashtext(path)``)."""

_PREFIX: Final = "analytics_"


def _slice_table(name: str, components: Sequence[str]) -> str:
    return (
        f"CREATE TABLE IF NOT EXISTS {_PREFIX}{name} ("
        " equipment text NOT NULL, start_ns bigint NOT NULL, end_ns bigint NOT NULL,"
        " hour_ns bigint NOT NULL, shift text NOT NULL, shift_start_ns bigint NOT NULL,"
        " day text NOT NULL, "
        + ", ".join(f"{c} double precision NOT NULL" for c in components)
        + ", PRIMARY KEY (equipment, start_ns))"
    )


def _hours_table(name: str) -> str:
    return (
        f"CREATE TABLE IF NOT EXISTS {_PREFIX}{name} ("
        " equipment text NOT NULL, hour_ns bigint NOT NULL, computed_ns bigint NOT NULL,"
        " PRIMARY KEY (equipment, hour_ns))"
    )


ANALYTICS_TABLES: Final = (
    _slice_table("oee_slices", COMPONENTS),
    f"CREATE INDEX IF NOT EXISTS {_PREFIX}oee_slices_hour ON {_PREFIX}oee_slices"
    " (equipment, hour_ns)",
    _hours_table("oee_hours"),
    _slice_table("energy_slices", ENERGY_COMPONENTS),
    f"CREATE INDEX IF NOT EXISTS {_PREFIX}energy_slices_hour ON {_PREFIX}energy_slices"
    " (equipment, hour_ns)",
    _hours_table("energy_hours"),
    f"CREATE TABLE IF NOT EXISTS {_PREFIX}meta (key text PRIMARY KEY, value text NOT NULL)",
    f"CREATE TABLE IF NOT EXISTS {_PREFIX}stop_reasons ("
    " equipment text NOT NULL, start_ns bigint NOT NULL, reason bigint NOT NULL,"
    ' "user" text NOT NULL, comment text NOT NULL, assigned_ns bigint NOT NULL,'
    " PRIMARY KEY (equipment, start_ns))",
    f"CREATE TABLE IF NOT EXISTS {_PREFIX}stop_reason_log ("
    " seq bigserial PRIMARY KEY, equipment text NOT NULL, start_ns bigint NOT NULL,"
    ' reason bigint NOT NULL, previous bigint, "user" text NOT NULL, comment text NOT NULL,'
    " assigned_ns bigint NOT NULL)",
    f"CREATE INDEX IF NOT EXISTS {_PREFIX}stop_reason_log_stop ON {_PREFIX}stop_reason_log"
    " (equipment, start_ns, seq)",
    f"CREATE TABLE IF NOT EXISTS {_PREFIX}epochs (equipment text PRIMARY KEY,"
    " epoch bigint NOT NULL)",
)
"""Created if missing under the schema's set-up lock (processes starting together would
race in ``CREATE``)."""

_COLUMNS: Final = ("equipment", "start_ns", "end_ns", "hour_ns", "shift", "shift_start_ns", "day")


def _table(name: str) -> str:
    return _PREFIX + name


def _epoch(con: psycopg.Connection[Any], equipment: str) -> int:
    row = con.execute(
        f"SELECT epoch FROM {_table('epochs')} WHERE equipment = %s", [equipment]
    ).fetchone()
    return 0 if row is None else int(row[0])


class PgAnalyticsStore:
    """The analytics tables in ``schema_name`` of the database at ``dsn``: an
    :class:`~.store_base.AnalyticsStorage`.

    Raises:
        AnalyticsStoreError: the database cannot be reached, or the tables created.
    """

    def __init__(self, dsn: str, schema_name: str) -> None:
        self._dsn = dsn
        self._schema = schema_name
        self._con: psycopg.Connection[Any] | None = None
        self._connection()

    def _connection(self) -> psycopg.Connection[Any]:
        con = self._con
        if con is not None and not con.closed:
            return con
        try:
            con = psycopg.connect(
                self._dsn,
                autocommit=True,
                application_name="shopfloor-analytics",
                connect_timeout=10,
            )
            con.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(self._schema)))
            with con.transaction():
                con.execute(
                    "SELECT pg_advisory_xact_lock(%s, hashtext(%s))",
                    [COMMIT_LOCK_CLASS, self._schema],
                )
                for statement in ANALYTICS_TABLES:
                    con.execute(statement)
        except psycopg.Error as err:
            raise AnalyticsStoreError(
                f"shared analytics store (schema {self._schema}): cannot connect: {err}"
            ) from err
        self._con = con
        return con

    def _run(self, what: str, fn: Callable[[psycopg.Connection[Any]], T]) -> T:
        """``fn`` on the connection (connecting again if it was lost); errors wrapped."""
        con = self._connection()
        try:
            return fn(con)
        except psycopg.Error as err:
            if con.closed:
                self._con = None  # connect again next time
            raise AnalyticsStoreError(
                f"shared analytics store (schema {self._schema}): cannot {what}: {err}"
            ) from err

    def _locked(self, equipment: str, what: str, fn: Callable[[psycopg.Connection[Any]], T]) -> T:
        """``fn`` in one transaction holding the machine's lock."""

        def run(con: psycopg.Connection[Any]) -> T:
            with con.transaction():
                con.execute(
                    "SELECT pg_advisory_xact_lock(%s, hashtext(%s))",
                    [ANALYTICS_LOCK_CLASS, equipment],
                )
                return fn(con)

        return self._run(what, run)

    def close(self) -> None:
        """Close the connection."""
        if self._con is not None:
            self._con.close()
            self._con = None

    # ------------------------------------------------------------------ hours
    def put_hours(
        self,
        equipment: str,
        slices: Slices | EnergySlices,
        *,
        shift_names: Sequence[str],
        days: Sequence[str],
        computed_ns: int,
        kind: str = "oee",
        epoch: int | None = None,
    ) -> bool:
        """Store the slices of whole hours (replacing those hours), in one transaction,
        unless the machine's hours were forgotten since :meth:`epoch` gave ``epoch``
        (whether they were stored)."""
        table, hours_table, components, _ = KINDS[kind]
        hours, rows = slice_rows(equipment, slices, components, shift_names=shift_names, days=days)
        if not hours:
            return False
        columns = (*_COLUMNS, *components)
        updates = ", ".join(f"{c} = excluded.{c}" for c in columns[2:])
        insert = (
            f"INSERT INTO {_table(table)} ({', '.join(columns)}) VALUES"
            f" ({', '.join(['%s'] * len(columns))})"
            f" ON CONFLICT (equipment, start_ns) DO UPDATE SET {updates}"
        )

        def write(con: psycopg.Connection[Any]) -> bool:
            if epoch is not None and _epoch(con, equipment) != epoch:
                return False  # forgotten by someone since they were computed
            con.execute(
                f"DELETE FROM {_table(table)} WHERE equipment = %s AND hour_ns = ANY(%s)",
                [equipment, hours],
            )
            with con.cursor() as cur:
                cur.executemany(insert, rows)
                cur.execute(
                    f"INSERT INTO {_table(hours_table)} (equipment, hour_ns, computed_ns)"
                    " SELECT %s, h, %s FROM unnest(%s::bigint[]) AS h"
                    " ON CONFLICT (equipment, hour_ns) DO UPDATE"
                    " SET computed_ns = excluded.computed_ns",
                    [equipment, computed_ns, hours],
                )
            return True

        return self._locked(equipment, "write", write)

    def epoch(self, equipment: str) -> int:
        """How many times the machine's stored hours were forgotten (read it before
        computing hours, give it to :meth:`put_hours`)."""
        return self._run("read", lambda con: _epoch(con, equipment))

    def count_hours(
        self, equipment: Sequence[str], start_ns: int, end_ns: int, *, kind: str = "oee"
    ) -> dict[str, int]:
        """Per machine, how many hours starting in ``[start_ns, end_ns)`` are stored."""
        hours_table = _table(KINDS[kind][1])
        rows = self._run(
            "read",
            lambda con: con.execute(
                f"SELECT equipment, count(*) FROM {hours_table} WHERE equipment = ANY(%s)"
                " AND hour_ns >= %s AND hour_ns < %s GROUP BY equipment",
                [list(equipment), start_ns, end_ns],
            ).fetchall(),
        )
        return {e: 0 for e in equipment} | {str(e): int(n) for e, n in rows}

    def stored_hours(
        self, equipment: Sequence[str], start_ns: int, end_ns: int, *, kind: str = "oee"
    ) -> dict[str, set[int]]:
        """Per machine, the stored hours starting in ``[start_ns, end_ns)``."""
        hours_table = _table(KINDS[kind][1])
        rows = self._run(
            "read",
            lambda con: con.execute(
                f"SELECT equipment, hour_ns FROM {hours_table} WHERE equipment = ANY(%s)"
                " AND hour_ns >= %s AND hour_ns < %s",
                [list(equipment), start_ns, end_ns],
            ).fetchall(),
        )
        out: dict[str, set[int]] = {e: set() for e in equipment}
        for eq, hour in rows:
            out[eq].add(int(hour))
        return out

    def sum_hours(
        self, equipment: Sequence[str], start_ns: int, end_ns: int, group: str, *, kind: str = "oee"
    ) -> list[GroupSums]:
        """Summed components of the stored hours in ``[start_ns, end_ns)``, per group
        (``hour``, ``shift``, ``day`` or ``none``), in one ``SUM … GROUP BY``."""
        table, _, components, _ = KINDS[kind]
        key = GROUP_KEYS[group]
        sums = ", ".join(f"sum({c})" for c in components)
        # PostgreSQL refuses a constant in GROUP BY: one group is a plain aggregate,
        # which answers one row of NULLs over no rows (hence HAVING)
        grouping = "HAVING count(*) > 0" if group == "none" else f"GROUP BY {key}"
        query = (
            f"SELECT {key}, min(start_ns), max(end_ns), {sums} FROM {_table(table)}"
            " WHERE equipment = ANY(%s) AND hour_ns >= %s AND hour_ns < %s " + grouping
        )
        rows = self._run(
            "read",
            lambda con: con.execute(query, [list(equipment), start_ns, end_ns]).fetchall(),
        )
        width = len(key.split(","))
        return [
            GroupSums(
                key=tuple(r[:width]),
                start_ns=int(r[width]),
                end_ns=int(r[width + 1]),
                sums=dict(zip(components, (float(v) for v in r[width + 2 :]), strict=True)),
            )
            for r in rows
        ]

    def invalidate(self, equipment: str, start_ns: int, end_ns: int) -> None:
        """Forget the stored hours (OEE and energy) overlapping ``[start_ns, end_ns)``, for
        every server: computed again. The machine's :meth:`epoch` moves, so hours any
        server is computing meanwhile are not stored."""
        first = start_ns // HOUR_NS * HOUR_NS

        def delete(con: psycopg.Connection[Any]) -> None:
            for table in ("oee_hours", "oee_slices", "energy_hours", "energy_slices"):
                con.execute(
                    f"DELETE FROM {_table(table)} WHERE equipment = %s"
                    " AND hour_ns >= %s AND hour_ns < %s",
                    [equipment, first, end_ns],
                )
            con.execute(
                f"INSERT INTO {_table('epochs')} (equipment, epoch) VALUES (%s, 1)"
                f" ON CONFLICT (equipment) DO UPDATE SET epoch = {_table('epochs')}.epoch + 1",
                [equipment],
            )

        self._locked(equipment, "write", delete)

    def settings_changed(self, fingerprint: str, *, kind: str = "oee") -> bool:
        """Whether the hours of ``kind`` were computed with other settings; if so they are
        all forgotten (the reasons stay) and ``fingerprint`` is kept for next time.

        Servers starting together with the same settings clear them once (the check and
        the clearing hold one lock)."""
        table, hours_table, _, key = KINDS[kind]

        def check(con: psycopg.Connection[Any]) -> bool:
            row = con.execute(
                f"SELECT value FROM {_table('meta')} WHERE key = %s", [key]
            ).fetchone()
            if row is not None and row[0] == fingerprint:
                return False
            con.execute(f"DELETE FROM {_table(hours_table)}")
            con.execute(f"DELETE FROM {_table(table)}")
            con.execute(
                f"INSERT INTO {_table('meta')} (key, value) VALUES (%s, %s)"
                " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                [key, fingerprint],
            )
            return row is not None

        return self._locked(f"settings:{key}", "write", check)

    # ---------------------------------------------------------------- reasons
    def assign_reason(
        self, equipment: str, start_ns: int, reason: int, *, user: str, comment: str, now_ns: int
    ) -> ReasonAssignment:
        """Store an operator's reason for the stop starting at ``start_ns``, and log it
        (the reason it replaced read under the machine's lock: two operators assigning
        at once each log what they replaced)."""

        def write(con: psycopg.Connection[Any]) -> int | None:
            row = con.execute(
                f"SELECT reason FROM {_table('stop_reasons')}"
                " WHERE equipment = %s AND start_ns = %s",
                [equipment, start_ns],
            ).fetchone()
            previous = None if row is None else int(row[0])
            con.execute(
                f'INSERT INTO {_table("stop_reasons")} (equipment, start_ns, reason, "user",'
                " comment, assigned_ns) VALUES (%s, %s, %s, %s, %s, %s)"
                " ON CONFLICT (equipment, start_ns) DO UPDATE SET reason = excluded.reason,"
                ' "user" = excluded."user", comment = excluded.comment,'
                " assigned_ns = excluded.assigned_ns",
                [equipment, start_ns, reason, user, comment, now_ns],
            )
            con.execute(
                f"INSERT INTO {_table('stop_reason_log')} (equipment, start_ns, reason, previous,"
                ' "user", comment, assigned_ns) VALUES (%s, %s, %s, %s, %s, %s, %s)',
                [equipment, start_ns, reason, previous, user, comment, now_ns],
            )
            return previous

        previous = self._locked(equipment, "write", write)
        return ReasonAssignment(equipment, start_ns, reason, previous, user, comment, now_ns)

    def reasons(self, equipment: str, start_ns: int, end_ns: int) -> dict[int, int]:
        """Operator reasons of one machine's stops starting in ``[start_ns, end_ns)``."""
        rows = self._run(
            "read",
            lambda con: con.execute(
                f"SELECT start_ns, reason FROM {_table('stop_reasons')} WHERE equipment = %s"
                " AND start_ns >= %s AND start_ns < %s",
                [equipment, start_ns, end_ns],
            ).fetchall(),
        )
        return {int(s): int(r) for s, r in rows}

    def assignments(
        self, equipment: str, start_ns: int, end_ns: int
    ) -> dict[int, ReasonAssignment]:
        """Who assigned which reason to the stops starting in ``[start_ns, end_ns)``."""
        rows = self._run(
            "read",
            lambda con: con.execute(
                'SELECT r.start_ns, r.reason, r."user", r.comment, r.assigned_ns,'
                f" (SELECT previous FROM {_table('stop_reason_log')} l"
                "  WHERE l.equipment = r.equipment AND l.start_ns = r.start_ns"
                "  ORDER BY seq DESC LIMIT 1)"
                f" FROM {_table('stop_reasons')} r WHERE equipment = %s"
                " AND start_ns >= %s AND start_ns < %s",
                [equipment, start_ns, end_ns],
            ).fetchall(),
        )
        return {
            int(s): ReasonAssignment(
                equipment, int(s), int(r), None if p is None else int(p), u, c, int(t)
            )
            for s, r, u, c, t, p in rows
        }
