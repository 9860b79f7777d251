"""Alarms evaluated by the ingest workers, each partition by exactly one of them at a time.

Scaled out (docs/scale-out.md), a point is stored by whichever worker the broker handed
its batch to. Its alarms are evaluated by the worker that **owns** the partition of its
equipment (:mod:`~.partitions`), from what is **committed**: the historian copies the
points alarm rules read into the committed-points feed in the transaction that stores
them (:mod:`shopfloor.server.historian.pg_feed`), and the owner reads its partition's feed
after its cursor, evaluates (:class:`~.evaluator.AlarmEvaluator`) and, in one
transaction, journals the transitions, upserts the alarms' statuses, moves the cursor and
deletes the feed rows consumed (:mod:`~.pg_journal`). So:

* **exactly once**: a committed point is in the feed exactly once; a transition is
  journaled iff the cursor moved past the feed row that caused it. An owner killed
  mid-way leaves the transaction uncommitted (PostgreSQL aborts it when the socket
  closes), and its successor continues from the cursor and the statuses it committed.
* **ownership**: a session advisory lock per partition (:data:`PARTITION_LOCK_CLASS`),
  held on the owner's one connection, on which it also writes — a worker that lost its
  connection (and with it its locks) cannot commit anything for a partition any more.
  The cursor is moved only from the value the owner read (compare and set), which would
  also stop a second writer.
* **a dead owner's partitions move within seconds**, and **balance** between the
  workers: the leases of :mod:`shopfloor.server.leases` (a worker gives back what is
  beyond its fair share after committing its work).

**Operator actions** come from the API servers as requests in ``alarm_commands``
(:mod:`~.commands`); the owner of the alarm's partition applies each between two
evaluations, in one transaction with the transitions it caused (journaled with the
request's id) and the request marked done — or refused, with the field and message the
API server answers with.

**Notifications and UNS alarm events** (an :class:`Announcer`): the owner hands the
transitions it journaled to the announcer *after* their transaction committed, so each
is announced once, by the owner that journaled it; a successor never announces what its
predecessor journaled. Escalations are kept in PostgreSQL (``alarm_escalations``,
written in the journal's transaction for each activation a route escalates): the owner
of the partition takes the due ones (``DELETE … RETURNING``) and, if the alarm is still
unacknowledged, has them sent, so a pending escalation moves with its partition and is
sent once. What was committed but not yet sent when an owner dies is lost, as in a
single server that crashes (at most once, never twice).

**Edits of the plant** reach a running owner through :meth:`PartitionOwner.replace`:
between two rounds, each partition held gets its new rules; an alarm whose rule stayed
keeps its state, delays and shelve (as :meth:`~.engine.AlarmEngine.replace_rules`).

Not carried over a hand-over: an on/off delay still running (it starts again at the
next point, as after a restart of a single server).

Everything runs on one thread with a blocking psycopg connection (:meth:`~shopfloor.
server.leases.LeaseOwner.run`), started by the worker through ``asyncio.to_thread``
and stopped by an event.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, Protocol

import numpy as np
import psycopg

from shopfloor.errors import PayloadError, UnknownTagError
from shopfloor.model import PointBatch, now_ns
from shopfloor.server.leases import KEEPALIVE_S, LeaseLost, LeaseOwner, Leases
from shopfloor.server.pg_locks import ALARM_MEMBER, ALARM_PARTITION
from shopfloor.server.rules.alarms import Alarm, AlarmEvent, AlarmState, Transition
from shopfloor.server.rules.commands import Command
from shopfloor.server.rules.evaluator import AlarmEvaluator
from shopfloor.server.rules.partitions import PartitionMap
from shopfloor.server.rules.pg_journal import (
    create_tables,
    insert_transitions,
    read_statuses,
    set_schema,
)

__all__ = [
    "KEEPALIVE_S",
    "MEMBER_LOCK_CLASS",
    "PARTITION_LOCK_CLASS",
    "Announcer",
    "PartitionOwner",
]

logger = logging.getLogger(__name__)

PARTITION_LOCK_CLASS: Final = ALARM_PARTITION
"""First key of a partition's session advisory lock (second: schema and partition)."""
MEMBER_LOCK_CLASS: Final = ALARM_MEMBER
"""First key of the member lock every owner holds shared (second: the schema)."""


class Fenced(LeaseLost):
    """The partition's cursor is not where this owner left it: another owner moved it."""


class Announcer(Protocol):
    """Where an owner's journaled transitions go (notifications, UNS); called on the
    owner's thread, after the commit, so it must not block."""

    def journaled(self, transitions: list[Transition]) -> None:
        """Transitions just committed to the journal, in order."""

    @property
    def escalating(self) -> bool:
        """Whether any route escalates (else the owner never looks for due ones)."""

    def escalations(self, transition: Transition) -> list[tuple[int, str]]:
        """(due ns, channel) of each escalation ``transition`` starts (none: most)."""

    def escalate(self, transition: Transition, target: str) -> None:
        """An activation still unacknowledged at its escalation: tell ``target``."""


_INSERT_ESCALATION: Final = (
    "INSERT INTO alarm_escalations (part, alarm, target, due_ns, ts_ns, before, after, value) "
    "VALUES (%s, %s, %s, %s, %s, %s, %s, %s)"
)


@dataclass(slots=True)
class _Partition:
    cursor: int
    evaluator: AlarmEvaluator


class PartitionOwner(LeaseOwner):
    """Owns alarm partitions on behalf of one worker and evaluates their feed.

    Args:
        dsn: the historian's connection string.
        schema_name: the historian's schema.
        partitions: the rules split into partitions.
        member: this worker's name (journaled as the cursor's owner, logged).
        poll_s: how often the feed is read and free partitions looked for.
        max_rows: feed rows (commits) evaluated per partition and transaction.
        clock: wall time (delays running out with no point).
        announcer: told of what was journaled, and of escalations due (None: nobody).
    """

    def __init__(
        self,
        dsn: str,
        schema_name: str,
        partitions: PartitionMap,
        *,
        member: str,
        poll_s: float = 0.2,
        max_rows: int = 200,
        clock: Callable[[], int] = now_ns,
        announcer: Announcer | None = None,
    ) -> None:
        super().__init__(
            dsn,
            Leases(
                schema_name,
                partitions.partitions,
                member=member,
                lock_class=PARTITION_LOCK_CLASS,
                member_class=MEMBER_LOCK_CLASS,
                what="alarm",
            ),
            poll_s=poll_s,
        )
        self._announcer = announcer
        self._next_map: PartitionMap | None = None
        self._map_lock = threading.Lock()
        self._schema = schema_name
        self._map = partitions
        self.member = member
        self._max_rows = max_rows
        self._clock = clock
        self._state: dict[int, _Partition | None] = {}
        """Per partition held: its cursor and evaluator (None: loaded at first use)."""
        self._paths: dict[int, str] = {}
        self.transitions = 0
        """Transitions journaled by this owner."""
        self.replaced = 0
        """Edits of the rules applied."""

    @property
    def taken(self) -> int:
        """Partitions taken since the start."""
        return self.leases.taken

    @property
    def released(self) -> int:
        """Partitions given back to balance the shares since the start."""
        return self.leases.released

    def members(self, con: psycopg.Connection[Any]) -> int:
        """How many owners hold the member lock now (this one included)."""
        return self.leases.members(con)

    def replace(self, partitions: PartitionMap) -> None:
        """Evaluate ``partitions``' rules from the next round on (an edit of the plant);
        thread-safe.

        Raises:
            ValueError: the number of partitions differs (it is fixed by the config).
        """
        if partitions.partitions != self._map.partitions:
            raise ValueError("alarms.partitions cannot change while running")
        with self._map_lock:
            self._next_map = partitions

    def _apply_replacement(self, con: psycopg.Connection[Any]) -> None:
        """Give each partition held its new rules, keeping the alarms whose rule stayed."""
        with self._map_lock:
            new, self._next_map = self._next_map, None
        if new is None:
            return
        self._map = new
        for part, state in self._state.items():
            if state is None:
                continue  # loaded with the new rules at its first evaluation
            part_rules = new.rules(part)
            wanted = set(part_rules)
            kept: dict[str, Alarm] = {
                rule.name: alarm
                for rule, alarm in zip(state.evaluator.rules, state.evaluator.alarms, strict=True)
                if rule in wanted
            }
            evaluator = AlarmEvaluator(part_rules)
            saved = read_statuses(con, [r.name for r in evaluator.rules])
            saved.update({name: alarm.status for name, alarm in kept.items()})
            evaluator.restore(saved, kept)
            state.evaluator = evaluator
        self.replaced += 1
        logger.info("alarm partitions: rules replaced (%d partitions held)", len(self._state))

    # ------------------------------------------------------------------ the thread
    def prepare(self, con: psycopg.Connection[Any]) -> None:
        set_schema(con, self._schema)
        create_tables(con, self._schema)

    def forget(self) -> None:
        self._state.clear()

    def stopped(self) -> None:
        logger.info(
            "alarm partitions: stopped (%d transitions journaled, %d partitions taken, "
            "%d given back)",
            self.transitions,
            self.taken,
            self.released,
        )

    def work(self, con: psycopg.Connection[Any]) -> bool:
        held = self.leases.held
        for part in set(self._state) - held:  # given back: its state is the next owner's
            del self._state[part]
        for part in held:
            self._state.setdefault(part, None)  # loaded at its first evaluation
        self._apply_replacement(con)
        self._commands(con)
        self._escalate(con)
        busy = False
        for part in sorted(held):
            busy |= self._advance(con, part)
        return busy

    # ------------------------------------------------------------------ evaluation
    def _load(self, con: psycopg.Connection[Any], part: int) -> _Partition:
        """A partition's cursor and its alarms' statuses as the last owner committed them."""
        con.execute(
            "INSERT INTO alarm_cursor (part, seq, owner, moved_ns) VALUES (%s, 0, %s, %s) "
            "ON CONFLICT (part) DO NOTHING",
            [part, self.member, self._clock()],
        )
        row = con.execute("SELECT seq FROM alarm_cursor WHERE part = %s", [part]).fetchone()
        assert row is not None
        evaluator = AlarmEvaluator(self._map.rules(part))
        evaluator.restore(read_statuses(con, [r.name for r in evaluator.rules]))
        return _Partition(int(row[0]), evaluator)

    def _advance(self, con: psycopg.Connection[Any], part: int) -> bool:
        """Evaluate what the partition's feed holds after its cursor; True if rows were
        left for the next round."""
        state = self._state.get(part)
        if state is None:
            state = self._state[part] = self._load(con, part)
        rows = con.execute(
            "SELECT seq, tag_id, ts, value, quality FROM point_feed "
            "WHERE part = %s AND seq > %s ORDER BY seq LIMIT %s",
            [part, state.cursor, self._max_rows],
        ).fetchall()
        if not rows and not state.evaluator.rules:
            return False
        transitions = []
        try:
            for _, tag_id, ts, value, quality in rows:
                transitions += state.evaluator.process(self._batch(con, tag_id, ts, value, quality))
            transitions += state.evaluator.tick(self._clock())
            if not rows and not transitions:
                return False
            new = int(rows[-1][0]) if rows else state.cursor
            with con.transaction():
                moved = con.execute(
                    "UPDATE alarm_cursor SET seq = %s, owner = %s, moved_ns = %s "
                    "WHERE part = %s AND seq = %s",
                    [new, self.member, self._clock(), part, state.cursor],
                )
                if moved.rowcount != 1:
                    raise Fenced(f"alarm partition {part}: its cursor was moved by another owner")
                insert_transitions(con, transitions, part=part, feed_seq=new)
                self._insert_escalations(con, part, transitions)
                if rows:
                    con.execute("DELETE FROM point_feed WHERE part = %s AND seq <= %s", [part, new])
        except BaseException:
            self._state[part] = None  # memory ran ahead of the database: load it again
            raise
        state.cursor = new
        self.transitions += len(transitions)
        self._announce(transitions)
        return len(rows) == self._max_rows

    def _commands(self, con: psycopg.Connection[Any]) -> None:
        """Apply the operators' requests for alarms of the partitions held (API servers
        queue them, :meth:`~.pg_journal.PgAlarmJournal.request`), each in the transaction
        that journals what it caused and marks it done."""
        rows = con.execute(
            'SELECT id, alarm, action, until_ns, "user", comment FROM alarm_commands '
            "WHERE done_ns IS NULL ORDER BY id LIMIT 100"
        ).fetchall()
        for request, alarm, action, until_ns, user, comment in rows:
            part = self._map.part_of_alarm(alarm)
            if part is None or part not in self._state:
                continue  # another owner's, or an alarm this worker's rules do not have
            state = self._state.get(part)
            if state is None:
                state = self._state[part] = self._load(con, part)
            command = Command(action, user, comment, until_ns)
            error: PayloadError | None = None
            try:
                transitions = command.apply(state.evaluator.alarm_named(alarm), self._clock())
            except PayloadError as err:
                transitions, error = [], err
            try:
                with con.transaction():
                    self._fence(con, part, state.cursor)
                    insert_transitions(
                        con, transitions, part=part, feed_seq=state.cursor, command=request
                    )
                    self._insert_escalations(con, part, transitions)
                    con.execute(
                        "UPDATE alarm_commands SET done_ns = %s, error_field = %s, error = %s "
                        "WHERE id = %s AND done_ns IS NULL",
                        [
                            self._clock(),
                            None if error is None else error.field,
                            None if error is None else error.message,
                            request,
                        ],
                    )
            except BaseException:
                self._state[part] = None  # memory ran ahead of the database: load it again
                raise
            self.transitions += len(transitions)
            self._announce(transitions)

    # ------------------------------------------------------------------ announcing
    def _announce(self, transitions: list[Transition]) -> None:
        if transitions and self._announcer is not None:
            self._announcer.journaled(transitions)

    def _insert_escalations(
        self, con: psycopg.Connection[Any], part: int, transitions: list[Transition]
    ) -> None:
        """Record the escalations the activations start (in the journal's transaction)."""
        if self._announcer is None:
            return
        rows = [
            (part, t.alarm, target, due, t.ts_ns, t.before.value, t.after.value, t.value)
            for t in transitions
            for due, target in self._announcer.escalations(t)
        ]
        if rows:
            with con.cursor() as cur:
                cur.executemany(_INSERT_ESCALATION, rows)

    def _escalate(self, con: psycopg.Connection[Any]) -> None:
        """Take the due escalations of the partitions held; have those of alarms still
        unacknowledged sent (each row is taken by one owner: ``DELETE … RETURNING``)."""
        if self._announcer is None or not self._announcer.escalating or not self._state:
            return
        rows = con.execute(
            "DELETE FROM alarm_escalations WHERE part = ANY(%s) AND due_ns <= %s "
            "RETURNING part, alarm, target, ts_ns, before, after, value",
            [sorted(self._state), self._clock()],
        ).fetchall()
        for part, alarm, target, ts_ns, before, after, value in sorted(rows, key=lambda r: r[3]):
            state = self._state.get(part)
            if state is None:
                state = self._state[part] = self._load(con, part)
            try:
                current = state.evaluator.alarm_named(alarm)
            except UnknownTagError:
                continue  # its rule was removed meanwhile
            if current.state is not AlarmState.UNACKNOWLEDGED:
                continue
            activation = Transition(
                alarm,
                AlarmEvent.ACTIVATED,
                int(ts_ns),
                AlarmState(before),
                AlarmState(after),
                current.status,
                value=value,
            )
            self._announcer.escalate(activation, target)

    def _fence(self, con: psycopg.Connection[Any], part: int, cursor: int) -> None:
        """Move the partition's cursor to itself, or fail if another owner moved it."""
        moved = con.execute(
            "UPDATE alarm_cursor SET owner = %s, moved_ns = %s WHERE part = %s AND seq = %s",
            [self.member, self._clock(), part, cursor],
        )
        if moved.rowcount != 1:
            raise Fenced(f"alarm partition {part}: its cursor was moved by another owner")

    def _batch(
        self,
        con: psycopg.Connection[Any],
        tag_id: list[int],
        ts: list[int],
        value: list[float],
        quality: list[int],
    ) -> PointBatch:
        """A feed row as a batch (tag ids to paths through the historian's tag table)."""
        ids = np.asarray(tag_id, np.int64)
        unique, index = np.unique(ids, return_inverse=True)
        missing = [i for i in unique.tolist() if i not in self._paths]
        if missing:
            for tid, path in con.execute(
                "SELECT id, path FROM tags WHERE id = ANY(%s)", [missing]
            ).fetchall():
                self._paths[int(tid)] = str(path)
        return PointBatch.from_columns(
            [self._paths.get(i, "") for i in unique.tolist()],
            index,
            ts,
            value,
            np.asarray(quality, np.int64) & 0xFFFFFFFF,
        )
