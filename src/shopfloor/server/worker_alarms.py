"""An ingest worker's alarm events: notifications and UNS for the partitions it owns.

Scaled out (docs/scale-out.md), the worker owning an alarm's partition journals its
transitions (:mod:`~.rules.partitioned`); the API servers only show them. So the worker
is also who tells people and systems: :class:`WorkerAlarms` is the owner's
:class:`~.rules.partitioned.Announcer` (called on its thread, after each commit) and the
:class:`~.rules.notify.dispatcher.AlarmSource` the notification dispatcher and the UNS
publisher follow on the event loop. Each transition is announced by the one owner that
journaled it, once; escalations are kept in PostgreSQL by the owners and handed to the
dispatcher when due (``durable_escalations``), so they move with their partition.

Send attempts are logged to the shared journal (``alarm_notifications``), where every
API server reads them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from shopfloor.config.notify import RouteConfig
from shopfloor.runtime.channels import Channel
from shopfloor.server.rules.alarms import AlarmState, Transition
from shopfloor.server.rules.journal import JournalError, SendAttempt
from shopfloor.server.rules.notify.dispatcher import Dispatcher, escalations_of
from shopfloor.server.rules.partitions import PartitionMap
from shopfloor.server.rules.pg_journal import PgAlarmJournal
from shopfloor.server.rules.rule import AlarmRule

__all__ = ["WorkerAlarms"]

logger = logging.getLogger(__name__)


class WorkerAlarms:
    """The bridge from a partition owner's thread to the worker's event loop.

    Args:
        partitions: the rules as split (replaced on an edit of the plant).
        routes: the notification routes (their escalations are recorded by the owner).
        dsn: the historian's connection string (send attempts are logged there).
        schema_name: the historian's schema.
    """

    def __init__(
        self,
        partitions: PartitionMap,
        *,
        routes: Sequence[RouteConfig],
        dsn: str,
        schema_name: str,
    ) -> None:
        self.partitions = partitions
        self.events: Channel[Transition] = Channel("alarm-events", maxsize=4096)
        """Every transition this worker's owner journaled, in order, after its commit."""
        self.dispatcher: Dispatcher | None = None
        """Set by the worker when it sends notifications (escalations go to it)."""
        self._routes = routes
        self._dsn = dsn
        self._schema = schema_name
        self._journal: PgAlarmJournal | None = None
        self._journal_lock = asyncio.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._log_failed = False

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """The event loop the events are published on (before the owner starts)."""
        self._loop = loop

    # ------------------------------------------------------------------ Announcer (owner's thread)
    def journaled(self, transitions: list[Transition]) -> None:
        """Publish committed transitions on the event loop, in order."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        for t in transitions:
            loop.call_soon_threadsafe(self.events.publish, t)

    @property
    def escalating(self) -> bool:
        """Whether a route escalates (and the dispatcher runs to send them)."""
        return self.dispatcher is not None and any(r.escalate_to for r in self._routes)

    def escalations(self, transition: Transition) -> list[tuple[int, str]]:
        """(due ns, channel) of each escalation ``transition`` starts."""
        rule = self.partitions.rule(transition.alarm)
        return [] if rule is None else escalations_of(self._routes, transition, rule)

    def escalate(self, transition: Transition, target: str) -> None:
        """Hand a due escalation to the dispatcher on the event loop."""
        loop, dispatcher = self._loop, self.dispatcher
        if loop is not None and not loop.is_closed() and dispatcher is not None:
            loop.call_soon_threadsafe(dispatcher.escalate, transition, target)

    # ------------------------------------------------------------------ AlarmSource (event loop)
    def rule(self, name: str) -> AlarmRule | None:
        """The rule of an alarm, by name."""
        return self.partitions.rule(name)

    def alarm_tag(self, name: str) -> str | None:
        """The tag an alarm watches (where UNS publishes its state)."""
        rule = self.partitions.rule(name)
        return None if rule is None else rule.tag

    def state_of(self, name: str) -> AlarmState | None:
        """Not known here (the owner's thread holds the states); the dispatcher asks only
        for escalations it keeps itself, and these are kept by the owner."""
        return None

    async def log_attempt(self, attempt: SendAttempt) -> None:
        """Log one send attempt in the shared journal (a failure is logged, not raised:
        the message was sent or not either way)."""
        async with self._journal_lock:
            try:
                await asyncio.to_thread(self._log, attempt)
            except JournalError as err:
                if not self._log_failed:
                    logger.warning("notification attempts not logged: %s", err)
                self._log_failed = True
            else:
                if self._log_failed:
                    logger.info("notification attempts logged again")
                self._log_failed = False

    def _log(self, attempt: SendAttempt) -> None:
        if self._journal is None:
            self._journal = PgAlarmJournal(self._dsn, self._schema)
        self._journal.log_attempt(attempt)

    async def close(self) -> None:
        """Close the journal connection."""
        async with self._journal_lock:
            if self._journal is not None:
                await asyncio.to_thread(self._journal.close)
                self._journal = None
