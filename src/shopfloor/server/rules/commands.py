"""Operator actions on an alarm as data, so they can be applied here or by another process.

A single server applies an action to its own alarm (:class:`~.engine.AlarmEngine`). In a
scaled-out installation the alarm's state belongs to the ingest worker owning its
partition (:mod:`~.partitioned`): an API server journals the action as a request
(``alarm_commands``, :mod:`~.pg_journal`), the owner applies it between two evaluations —
in the transaction that journals what it caused and marks the request done — and the
API server answers with that outcome. :meth:`Command.apply` is the one place an action
meets the state machine, whichever process runs it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

from shopfloor.server.rules.alarms import Alarm, Transition

__all__ = ["Action", "Command", "Outcome", "RemoteCommands"]

Action = Literal["acknowledge", "shelve", "unshelve", "in_service", "out_of_service", "comment"]


@dataclass(frozen=True, slots=True)
class Command:
    """One operator action: what, by whom, with which comment (and a shelve's end)."""

    action: Action
    user: str
    comment: str = ""
    until_ns: int | None = None

    def apply(self, alarm: Alarm, now_ns: int) -> list[Transition]:
        """Apply it to ``alarm`` at ``now_ns``; the transitions it caused.

        Raises:
            PayloadError: the alarm's state does not allow it (see :class:`~.alarms.Alarm`).
        """
        user, comment = self.user, self.comment
        if self.action == "acknowledge":
            return alarm.acknowledge(now_ns, user=user, comment=comment)
        if self.action == "shelve":
            until = self.until_ns if self.until_ns is not None else now_ns
            return alarm.shelve(now_ns, until_ns=until, user=user, comment=comment)
        if self.action == "unshelve":
            return alarm.unshelve(now_ns, user=user, comment=comment)
        if self.action in ("in_service", "out_of_service"):
            return alarm.set_in_service(
                now_ns, in_service=self.action == "in_service", user=user, comment=comment
            )
        return alarm.add_comment(now_ns, user=user, comment=comment)


@dataclass(frozen=True, slots=True)
class Outcome:
    """What the owner did with a request: the transitions it journaled, or the refusal
    (the field and message of the :class:`~shopfloor.errors.PayloadError`)."""

    transitions: tuple[Transition, ...] = ()
    error_field: str | None = None
    error: str | None = None


@runtime_checkable
class RemoteCommands(Protocol):
    """A journal through which requests reach the alarms' owners (blocking, one thread)."""

    def request(self, alarm: str, command: Command) -> int:
        """Queue ``command`` for ``alarm``'s owner; the request's id."""

    def outcome(self, request: int) -> Outcome | None:
        """The outcome of a request, None while it waits."""
