"""The alarm journal in PostgreSQL, shared by the processes of a scaled-out installation.

With ``alarms.partitions`` > 0 the ingest workers evaluate the alarms
(:mod:`~.partitioned`) and the API servers show them, so the journal and each alarm's
latest status live beside the historian, in its schema: ``alarm_journal``,
``alarm_status`` (with the partition of each alarm), ``alarm_cursor`` (per partition,
the last committed-points feed ``seq`` evaluated, moved in the same transaction as the
journal rows it caused), ``alarm_notifications`` (every send attempt) and
``alarm_escalations`` (the escalations pending, per partition: they move with it).

:class:`PgAlarmJournal` is the :class:`~.journal.Journal` an API server's engine reads in
follow mode. Blocking (psycopg's synchronous connection): call it from one thread, the
engine's.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

import numpy as np
import psycopg
from psycopg import sql

from shopfloor.model import now_ns
from shopfloor.model.points import Int64Array
from shopfloor.server.historian.pg_feed import FEED_TABLES
from shopfloor.server.historian.pg_shared import COMMIT_LOCK_CLASS
from shopfloor.server.rules.alarms import AlarmEvent, AlarmState, AlarmStatus, Transition
from shopfloor.server.rules.commands import Command, Outcome
from shopfloor.server.rules.journal import (
    JournalEntry,
    JournalError,
    SendAttempt,
    entry_filter,
    entry_of,
)

__all__ = [
    "JOURNAL_TABLES",
    "PgAlarmJournal",
    "create_tables",
    "insert_transitions",
    "read_statuses",
    "set_schema",
]

JOURNAL_TABLES: Final = (
    "CREATE TABLE IF NOT EXISTS alarm_journal ("
    " seq bigserial PRIMARY KEY, alarm text NOT NULL, event text NOT NULL,"
    " ts_ns bigint NOT NULL, before text NOT NULL, after text NOT NULL,"
    ' "user" text NOT NULL, comment text NOT NULL, value double precision,'
    " part integer NOT NULL, feed_seq bigint NOT NULL, command bigint)",
    "CREATE INDEX IF NOT EXISTS alarm_journal_alarm_ts ON alarm_journal (alarm, ts_ns)",
    "CREATE INDEX IF NOT EXISTS alarm_journal_ts ON alarm_journal (ts_ns)",
    "CREATE TABLE IF NOT EXISTS alarm_status ("
    " alarm text PRIMARY KEY, part integer NOT NULL, base text NOT NULL,"
    " condition boolean NOT NULL, shelved_until_ns bigint, suppressed boolean NOT NULL,"
    " out_of_service boolean NOT NULL, since_ns bigint NOT NULL, seen_ns bigint NOT NULL,"
    " value double precision)",
    "CREATE TABLE IF NOT EXISTS alarm_cursor ("
    " part integer PRIMARY KEY, seq bigint NOT NULL, owner text NOT NULL,"
    " moved_ns bigint NOT NULL)",
    "CREATE TABLE IF NOT EXISTS alarm_commands ("
    " id bigserial PRIMARY KEY, alarm text NOT NULL, action text NOT NULL,"
    ' until_ns bigint, "user" text NOT NULL, comment text NOT NULL,'
    " requested_ns bigint NOT NULL, done_ns bigint, error_field text, error text)",
    "CREATE INDEX IF NOT EXISTS alarm_commands_open ON alarm_commands (id) WHERE done_ns IS NULL",
    "CREATE TABLE IF NOT EXISTS alarm_notifications ("
    " id bigserial PRIMARY KEY, ts_ns bigint NOT NULL, alarm text NOT NULL,"
    " event text NOT NULL, channel text NOT NULL, attempt integer NOT NULL,"
    " ok boolean NOT NULL, detail text NOT NULL)",
    "CREATE TABLE IF NOT EXISTS alarm_escalations ("
    " id bigserial PRIMARY KEY, part integer NOT NULL, alarm text NOT NULL,"
    " target text NOT NULL, due_ns bigint NOT NULL, ts_ns bigint NOT NULL,"
    " before text NOT NULL, after text NOT NULL, value double precision)",
    "CREATE INDEX IF NOT EXISTS alarm_escalations_due ON alarm_escalations (part, due_ns)",
)
"""Created by the first worker (under the schema's set-up lock)."""

_STATUS_COLUMNS: Final = (
    "alarm, base, condition, shelved_until_ns, suppressed, out_of_service, since_ns, seen_ns, value"
)
_UPSERT_STATUS: Final = (
    "INSERT INTO alarm_status (alarm, part, base, condition, shelved_until_ns, suppressed, "
    "out_of_service, since_ns, seen_ns, value) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s) "
    "ON CONFLICT (alarm) DO UPDATE SET part = excluded.part, base = excluded.base, "
    "condition = excluded.condition, shelved_until_ns = excluded.shelved_until_ns, "
    "suppressed = excluded.suppressed, out_of_service = excluded.out_of_service, "
    "since_ns = excluded.since_ns, seen_ns = excluded.seen_ns, value = excluded.value"
)
_INSERT_JOURNAL: Final = (
    'INSERT INTO alarm_journal (alarm, event, ts_ns, before, after, "user", comment, value, '
    "part, feed_seq, command) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
)
_ENTRY_COLUMNS: Final = 'seq, alarm, event, ts_ns, before, after, "user", comment, value'


def set_schema(con: psycopg.Connection[Any], schema_name: str) -> None:
    """Point the connection at the historian's schema."""
    con.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(schema_name)))


def create_tables(con: psycopg.Connection[Any], schema_name: str) -> None:
    """Create the feed's and the journal's tables if missing, under the schema's set-up
    lock (the historians' too): processes starting together would race in ``CREATE``."""
    with con.transaction():
        con.execute(
            "SELECT pg_advisory_xact_lock(%s, hashtext(%s))", [COMMIT_LOCK_CLASS, schema_name]
        )
        for statement in (*FEED_TABLES, *JOURNAL_TABLES):
            con.execute(statement)


def _status(row: Sequence[Any]) -> AlarmStatus:
    return AlarmStatus(
        base=AlarmState(row[1]),
        condition=bool(row[2]),
        shelved_until_ns=row[3],
        suppressed=bool(row[4]),
        out_of_service=bool(row[5]),
        since_ns=row[6],
        seen_ns=row[7],
        value=row[8],
    )


def read_statuses(
    con: psycopg.Connection[Any], names: Sequence[str] | None = None
) -> dict[str, AlarmStatus]:
    """The latest status of the alarms ``names`` (None: of every alarm)."""
    if names is None:
        rows = con.execute(f"SELECT {_STATUS_COLUMNS} FROM alarm_status").fetchall()
    else:
        rows = con.execute(
            f"SELECT {_STATUS_COLUMNS} FROM alarm_status WHERE alarm = ANY(%s)", [list(names)]
        ).fetchall()
    return {row[0]: _status(row) for row in rows}


def insert_transitions(
    con: psycopg.Connection[Any],
    transitions: Sequence[Transition],
    *,
    part: int,
    feed_seq: int,
    command: int | None = None,
) -> None:
    """Journal ``transitions`` in order and upsert each alarm's latest status (call it in
    the transaction that moves the partition's cursor); ``command``: the operator's
    request that caused them."""
    if not transitions:
        return
    with con.cursor() as cur:
        cur.executemany(
            _INSERT_JOURNAL,
            [
                (
                    t.alarm,
                    t.event.value,
                    t.ts_ns,
                    t.before.value,
                    t.after.value,
                    t.user,
                    t.comment,
                    t.value,
                    part,
                    feed_seq,
                    command,
                )
                for t in transitions
            ],
        )
        latest = {t.alarm: t.status for t in transitions}
        cur.executemany(
            _UPSERT_STATUS,
            [
                (
                    alarm,
                    part,
                    s.base.value,
                    s.condition,
                    s.shelved_until_ns,
                    s.suppressed,
                    s.out_of_service,
                    s.since_ns,
                    s.seen_ns,
                    s.value,
                )
                for alarm, s in latest.items()
            ],
        )


class PgAlarmJournal:
    """The shared journal, read by an API server (written by the partition owners).

    Args:
        dsn: the historian's connection string.
        schema_name: the historian's schema.

    Raises:
        JournalError: the database cannot be reached.
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
                self._dsn, autocommit=True, application_name="shopfloor-alarms", connect_timeout=10
            )
            set_schema(con, self._schema)
            create_tables(con, self._schema)  # an API server may start before any worker
        except psycopg.Error as err:
            raise JournalError(f"shared alarm journal: cannot connect: {err}") from err
        self._con = con
        return con

    def _query(self, query: str, params: Sequence[object] = ()) -> list[tuple[Any, ...]]:
        try:
            return list(self._connection().execute(query, params).fetchall())
        except psycopg.Error as err:
            if self._con is not None and self._con.closed:
                self._con = None  # connect again next time
            raise JournalError(f"shared alarm journal: cannot read: {err}") from err

    def close(self) -> None:
        """Close the connection."""
        if self._con is not None:
            self._con.close()
            self._con = None

    def append(self, transitions: Sequence[Transition]) -> list[int]:
        """Refused: in a scaled-out installation only partition owners journal.

        Raises:
            JournalError: always, when there is something to append.
        """
        if transitions:
            raise JournalError("the shared alarm journal is written by the ingest workers")
        return []

    def request(self, alarm: str, command: Command) -> int:
        """Queue an operator action for the owner of ``alarm``'s partition; its id."""
        (row,) = self._query(
            'INSERT INTO alarm_commands (alarm, action, until_ns, "user", comment, '
            "requested_ns) VALUES (%s, %s, %s, %s, %s, %s) RETURNING id",
            (alarm, command.action, command.until_ns, command.user, command.comment, now_ns()),
        )
        return int(row[0])

    def outcome(self, request: int) -> Outcome | None:
        """What the owner did with request ``request`` (None: not done yet)."""
        rows = self._query(
            "SELECT done_ns, error_field, error FROM alarm_commands WHERE id = %s", (request,)
        )
        if not rows or rows[0][0] is None:
            return None
        if rows[0][2] is not None:
            return Outcome(error_field=rows[0][1], error=rows[0][2])
        journaled = self._query(
            f"SELECT {_ENTRY_COLUMNS} FROM alarm_journal WHERE command = %s ORDER BY seq",
            (request,),
        )
        statuses = self.statuses()
        return Outcome(
            tuple(
                Transition(
                    r[1],
                    AlarmEvent(r[2]),
                    r[3],
                    AlarmState(r[4]),
                    AlarmState(r[5]),
                    statuses.get(r[1], AlarmStatus()),
                    user=r[6],
                    comment=r[7],
                    value=r[8],
                )
                for r in journaled
            )
        )

    def statuses(self) -> dict[str, AlarmStatus]:
        """Each journaled alarm's latest status."""
        return {
            row[0]: _status(row)
            for row in self._query(f"SELECT {_STATUS_COLUMNS} FROM alarm_status")
        }

    def entries(
        self,
        *,
        alarm: str | None = None,
        start_ns: int | None = None,
        end_ns: int | None = None,
        after_seq: int = 0,
        before_seq: int | None = None,
        newest_first: bool = False,
        limit: int = 1000,
    ) -> list[JournalEntry]:
        """Journal entries (see :meth:`~.journal.AlarmJournal.entries`)."""
        where, params = entry_filter(
            "%s",
            alarm=alarm,
            start_ns=start_ns,
            end_ns=end_ns,
            after_seq=after_seq,
            before_seq=before_seq,
        )
        rows = self._query(
            f"SELECT {_ENTRY_COLUMNS} FROM alarm_journal WHERE {where} "
            f"ORDER BY seq {'DESC' if newest_first else 'ASC'} LIMIT %s",
            (*params, limit),
        )
        return [entry_of(r) for r in rows]

    def activations(self, start_ns: int, end_ns: int) -> tuple[list[str], Int64Array]:
        """Alarms that came in in ``[start_ns, end_ns)``: names, times."""
        rows = self._query(
            "SELECT alarm, ts_ns FROM alarm_journal WHERE event = 'activated' AND ts_ns >= %s "
            "AND ts_ns < %s ORDER BY ts_ns",
            (start_ns, end_ns),
        )
        return [r[0] for r in rows], np.array([r[1] for r in rows], np.int64)

    def log_attempt(self, attempt: SendAttempt) -> None:
        """Record one try to send a notification."""
        self._query(
            "INSERT INTO alarm_notifications (ts_ns, alarm, event, channel, attempt, ok, detail) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s) RETURNING id",
            (
                attempt.ts_ns,
                attempt.alarm,
                attempt.event,
                attempt.channel,
                attempt.attempt,
                attempt.ok,
                attempt.detail,
            ),
        )

    def attempts(self, *, alarm: str | None = None, limit: int = 1000) -> list[SendAttempt]:
        """Send attempts in order."""
        where, params = ("WHERE alarm = %s", [alarm]) if alarm is not None else ("", [])
        rows = self._query(
            "SELECT ts_ns, alarm, event, channel, attempt, ok, detail FROM alarm_notifications "
            f"{where} ORDER BY id LIMIT %s",
            (*params, limit),
        )
        return [SendAttempt(r[0], r[1], r[2], r[3], r[4], bool(r[5]), r[6]) for r in rows]
