"""The alarm journal: every transition, durable before anybody is told, queryable.

One SQLite file in WAL mode with ``synchronous=FULL``: a transition is on disk when
:meth:`AlarmJournal.append` returns, and a power cut loses none that were announced.
Each append is one transaction holding the journal rows and each alarm's latest
:class:`~shopfloor.server.rules.alarms.AlarmStatus`, so a restart restores exactly the
states the journal ends with (:meth:`AlarmJournal.statuses`).

Blocking: call it from one thread (the rule engine's), never from the event loop.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from shopfloor.errors import ShopfloorError
from shopfloor.model.points import Int64Array
from shopfloor.runtime.durable_sqlite import open_durable
from shopfloor.server.rules.alarms import AlarmEvent, AlarmState, AlarmStatus, Transition

__all__ = [
    "AlarmJournal",
    "Journal",
    "JournalEntry",
    "JournalError",
    "SendAttempt",
    "entry_filter",
    "entry_of",
]

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS journal ("
    " seq INTEGER PRIMARY KEY AUTOINCREMENT, alarm TEXT NOT NULL, event TEXT NOT NULL,"
    " ts_ns INTEGER NOT NULL, before TEXT NOT NULL, after TEXT NOT NULL,"
    " user TEXT NOT NULL, comment TEXT NOT NULL, value REAL)",
    "CREATE INDEX IF NOT EXISTS journal_alarm_ts ON journal (alarm, ts_ns)",
    "CREATE INDEX IF NOT EXISTS journal_ts ON journal (ts_ns)",
    "CREATE TABLE IF NOT EXISTS notifications ("
    " id INTEGER PRIMARY KEY AUTOINCREMENT, ts_ns INTEGER NOT NULL, alarm TEXT NOT NULL,"
    " event TEXT NOT NULL, channel TEXT NOT NULL, attempt INTEGER NOT NULL,"
    " ok INTEGER NOT NULL, detail TEXT NOT NULL)",
    "CREATE INDEX IF NOT EXISTS notifications_alarm ON notifications (alarm, ts_ns)",
    "CREATE TABLE IF NOT EXISTS alarm_status ("
    " alarm TEXT PRIMARY KEY, base TEXT NOT NULL, condition INTEGER NOT NULL,"
    " shelved_until_ns INTEGER, suppressed INTEGER NOT NULL, out_of_service INTEGER NOT NULL,"
    " since_ns INTEGER NOT NULL, seen_ns INTEGER NOT NULL, value REAL)",
)

_COLUMNS = "seq, alarm, event, ts_ns, before, after, user, comment, value"


class JournalError(ShopfloorError):
    """The alarm journal cannot be written or read (disk full, damaged file)."""


@dataclass(frozen=True, slots=True)
class JournalEntry:
    """A stored transition: ``seq`` orders the journal (timestamps may tie)."""

    seq: int
    alarm: str
    event: AlarmEvent
    ts_ns: int
    before: AlarmState
    after: AlarmState
    user: str
    comment: str
    value: float | None


@dataclass(frozen=True, slots=True)
class SendAttempt:
    """One try to send a notification: to which channel, the how-many-th, and the outcome."""

    ts_ns: int
    alarm: str
    event: str
    channel: str
    attempt: int
    ok: bool
    detail: str


class Journal(Protocol):
    """What the alarm engine needs of a journal (:class:`AlarmJournal`, or the shared one
    in PostgreSQL, :class:`~.pg_journal.PgAlarmJournal`). Blocking: one thread calls it."""

    def close(self) -> None:
        """Close it."""

    def append(self, transitions: Sequence[Transition]) -> list[int]:
        """Store ``transitions`` with each alarm's latest status, in one transaction."""

    def statuses(self) -> dict[str, AlarmStatus]:
        """Each journaled alarm's latest status."""

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
        """Journal entries (see :meth:`AlarmJournal.entries`)."""

    def activations(self, start_ns: int, end_ns: int) -> tuple[list[str], Int64Array]:
        """Alarms that came in in ``[start_ns, end_ns)``: names, times."""

    def log_attempt(self, attempt: SendAttempt) -> None:
        """Record one try to send a notification."""

    def attempts(self, *, alarm: str | None = None, limit: int = 1000) -> list[SendAttempt]:
        """Send attempts in order."""


class AlarmJournal:
    """The journal file at ``path`` (created with its folder if missing)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self._con = open_durable(path, _SCHEMA)
        except (OSError, sqlite3.Error) as err:
            raise JournalError(f"alarm journal {path}: {err}") from err

    def close(self) -> None:
        """Close the file."""
        self._con.close()

    def append(self, transitions: Sequence[Transition]) -> list[int]:
        """Store ``transitions`` in order, in one transaction; their sequence numbers.

        Raises:
            JournalError: nothing was stored.
        """
        if not transitions:
            return []
        try:
            self._con.execute("BEGIN IMMEDIATE")
            try:
                seqs = self._insert(transitions)
                latest = {t.alarm: t.status for t in transitions}
                self._con.executemany(
                    "INSERT INTO alarm_status VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
                    "ON CONFLICT (alarm) DO UPDATE SET base = excluded.base, "
                    "condition = excluded.condition, "
                    "shelved_until_ns = excluded.shelved_until_ns, "
                    "suppressed = excluded.suppressed, out_of_service = excluded.out_of_service, "
                    "since_ns = excluded.since_ns, seen_ns = excluded.seen_ns, "
                    "value = excluded.value",
                    [_status_row(alarm, s) for alarm, s in latest.items()],
                )
                self._con.execute("COMMIT")
            except BaseException:
                self._con.execute("ROLLBACK")
                raise
        except sqlite3.Error as err:
            raise JournalError(f"alarm journal {self.path}: cannot append: {err}") from err
        return seqs

    def _insert(self, transitions: Sequence[Transition]) -> list[int]:
        """Insert the rows in one statement; seqs follow the last (this is the one writer)."""
        (last,) = self._con.execute("SELECT coalesce(max(seq), 0) FROM journal").fetchone()
        seqs = list(range(last + 1, last + 1 + len(transitions)))
        self._con.executemany(
            "INSERT INTO journal (seq, alarm, event, ts_ns, before, after, user, comment, value) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (
                    seq,
                    t.alarm,
                    t.event.value,
                    t.ts_ns,
                    t.before.value,
                    t.after.value,
                    t.user,
                    t.comment,
                    t.value,
                )
                for seq, t in zip(seqs, transitions, strict=True)
            ],
        )
        return seqs

    def statuses(self) -> dict[str, AlarmStatus]:
        """Each journaled alarm's latest status (what a restart continues from)."""
        rows = self._query("SELECT * FROM alarm_status", ())
        return {
            row[0]: AlarmStatus(
                base=AlarmState(row[1]),
                condition=bool(row[2]),
                shelved_until_ns=row[3],
                suppressed=bool(row[4]),
                out_of_service=bool(row[5]),
                since_ns=row[6],
                seen_ns=row[7],
                value=row[8],
            )
            for row in rows
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
        """Journal entries filtered by alarm, ``[start, end)`` and ``after_seq < seq <
        before_seq``, in order of writing or, with ``newest_first``, the latest first (an
        operator's view pages back with ``before_seq``, the oldest ``seq`` seen)."""
        where, params = entry_filter(
            "?",
            alarm=alarm,
            start_ns=start_ns,
            end_ns=end_ns,
            after_seq=after_seq,
            before_seq=before_seq,
        )
        rows = self._query(
            f"SELECT {_COLUMNS} FROM journal WHERE {where} "
            f"ORDER BY seq {'DESC' if newest_first else 'ASC'} LIMIT ?",
            (*params, limit),
        )
        return [entry_of(r) for r in rows]

    def activations(self, start_ns: int, end_ns: int) -> tuple[list[str], Int64Array]:
        """Alarms that came in (``activated``) in ``[start_ns, end_ns)``: names, times."""
        rows = self._query(
            "SELECT alarm, ts_ns FROM journal WHERE event = 'activated' AND ts_ns >= ? "
            "AND ts_ns < ? ORDER BY ts_ns",
            (start_ns, end_ns),
        )
        return [r[0] for r in rows], np.array([r[1] for r in rows], np.int64)

    def log_attempt(self, attempt: SendAttempt) -> None:
        """Record one try to send a notification (each try, failed or not)."""
        try:
            self._con.execute(
                "INSERT INTO notifications (ts_ns, alarm, event, channel, attempt, ok, detail) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    attempt.ts_ns,
                    attempt.alarm,
                    attempt.event,
                    attempt.channel,
                    attempt.attempt,
                    int(attempt.ok),
                    attempt.detail,
                ),
            )
        except sqlite3.Error as err:
            raise JournalError(f"alarm journal {self.path}: cannot log a send: {err}") from err

    def attempts(self, *, alarm: str | None = None, limit: int = 1000) -> list[SendAttempt]:
        """Send attempts in order, optionally of one alarm."""
        where, params = ("WHERE alarm = ?", [alarm]) if alarm is not None else ("", [])
        rows = self._query(
            "SELECT ts_ns, alarm, event, channel, attempt, ok, detail FROM notifications "
            f"{where} ORDER BY id LIMIT ?",
            (*params, limit),
        )
        return [SendAttempt(r[0], r[1], r[2], r[3], r[4], bool(r[5]), r[6]) for r in rows]

    def _query(self, sql: str, params: Sequence[object]) -> list[tuple[Any, ...]]:
        try:
            return list(self._con.execute(sql, params).fetchall())
        except sqlite3.Error as err:
            raise JournalError(f"alarm journal {self.path}: cannot read: {err}") from err


def _status_row(alarm: str, s: AlarmStatus) -> tuple[object, ...]:
    return (
        alarm,
        s.base.value,
        int(s.condition),
        s.shelved_until_ns,
        int(s.suppressed),
        int(s.out_of_service),
        s.since_ns,
        s.seen_ns,
        s.value,
    )


def entry_filter(
    placeholder: str,
    *,
    alarm: str | None,
    start_ns: int | None,
    end_ns: int | None,
    after_seq: int,
    before_seq: int | None,
) -> tuple[str, list[object]]:
    """The WHERE clause and parameters of a journal query (SQLite's ``?`` or psycopg's
    ``%s`` placeholders): by alarm, ``[start, end)`` and ``after_seq < seq < before_seq``."""
    where = [f"seq > {placeholder}"]
    params: list[object] = [after_seq]
    for column, op, value in (
        ("seq", "<", before_seq),
        ("alarm", "=", alarm),
        ("ts_ns", ">=", start_ns),
        ("ts_ns", "<", end_ns),
    ):
        if value is not None:
            where.append(f"{column} {op} {placeholder}")
            params.append(value)
    return " AND ".join(where), params


def entry_of(row: Sequence[Any]) -> JournalEntry:
    """A journal row (``seq, alarm, event, ts_ns, before, after, user, comment, value``)."""
    return JournalEntry(
        seq=row[0],
        alarm=row[1],
        event=AlarmEvent(row[2]),
        ts_ns=row[3],
        before=AlarmState(row[4]),
        after=AlarmState(row[5]),
        user=row[6],
        comment=row[7],
        value=row[8],
    )
