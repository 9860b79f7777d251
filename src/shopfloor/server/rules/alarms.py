"""The ISA-18.2 alarm state machine of one alarm: pure, no I/O, time passed in.

States (ISA-18.2 letters)::

    A normal ─ condition on ─▶ B unacknowledged ─ ack ─▶ C acknowledged
    ▲                          │        ▲                 │
    │                   condition off   condition on      condition off
    │                          ▼        │                 │
    └──────── ack ──────── D returned unacknowledged      └─────▶ A normal

    F shelved (by an operator, until an expiry), G suppressed by design (a condition
    of the plant, e.g. the machine is stopped), H out of service (maintenance): the
    alarm is not annunciated; its condition is still followed, and on leaving, the
    alarm is B if the condition is on, else A (ISA-18.2: a standing condition comes
    back unacknowledged, so nobody misses it).

Delays and deadband keep nuisance alarms out: the condition must hold ``on_delay``
before the alarm comes in and be gone ``off_delay`` before it clears (timed by the
points' own timestamps, and by :meth:`Alarm.tick` when no point comes); the deadband
lives in the condition (:mod:`~shopfloor.server.rules.conditions`).

Every change is returned as :class:`Transition` records for the journal; the caller
stores them, in order, before it tells anyone. :meth:`Alarm.restore` starts from the
last journaled :class:`AlarmStatus`, so a restart continues where it stopped.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import StrEnum

from shopfloor.errors import PayloadError

__all__ = ["Alarm", "AlarmEvent", "AlarmState", "AlarmStatus", "Transition"]


class AlarmState(StrEnum):
    """What the operator sees."""

    NORMAL = "normal"
    """A: no condition, nothing to acknowledge."""
    UNACKNOWLEDGED = "unacknowledged"
    """B: the condition is on and nobody has acknowledged it."""
    ACKNOWLEDGED = "acknowledged"
    """C: the condition is on and acknowledged."""
    RETURNED_UNACKNOWLEDGED = "returned_unacknowledged"
    """D: the condition went away before anybody acknowledged it."""
    SHELVED = "shelved"
    """F: hidden by an operator until an expiry."""
    SUPPRESSED = "suppressed"
    """G: suppressed by design, while a plant condition holds."""
    OUT_OF_SERVICE = "out_of_service"
    """H: taken out of service (maintenance)."""


class AlarmEvent(StrEnum):
    """Why a journal entry was written."""

    ACTIVATED = "activated"
    CLEARED = "cleared"
    ACKNOWLEDGED = "acknowledged"
    SHELVED = "shelved"
    UNSHELVED = "unshelved"
    SHELVE_EXPIRED = "shelve_expired"
    SUPPRESSED = "suppressed"
    UNSUPPRESSED = "unsuppressed"
    REMOVED_FROM_SERVICE = "removed_from_service"
    RETURNED_TO_SERVICE = "returned_to_service"
    CONDITION = "condition"
    """The condition changed while the alarm was not annunciated (F, G, H)."""
    COMMENTED = "commented"


_ACTIVE = (AlarmState.UNACKNOWLEDGED, AlarmState.ACKNOWLEDGED)
_HIDDEN = (AlarmState.SHELVED, AlarmState.SUPPRESSED, AlarmState.OUT_OF_SERVICE)


@dataclass(frozen=True, slots=True)
class AlarmStatus:
    """Everything an alarm remembers; journaled with every transition.

    Attributes:
        base: the annunciation state (A–D) underneath any shelving, suppression or
            out-of-service, frozen while hidden.
        condition: the condition after delays (what the alarm believes).
        shelved_until_ns: set while shelved (F).
        suppressed: suppressed by design (G).
        out_of_service: out of service (H).
        since_ns: when the shown state began.
        seen_ns: the newest point timestamp taken; older ones are ignored.
        value: the point value that last changed the condition.
    """

    base: AlarmState = AlarmState.NORMAL
    condition: bool = False
    shelved_until_ns: int | None = None
    suppressed: bool = False
    out_of_service: bool = False
    since_ns: int = 0
    seen_ns: int = -(2**63)
    value: float | None = None

    @property
    def state(self) -> AlarmState:
        """The state shown: H before G before F before the annunciation state."""
        if self.out_of_service:
            return AlarmState.OUT_OF_SERVICE
        if self.suppressed:
            return AlarmState.SUPPRESSED
        if self.shelved_until_ns is not None:
            return AlarmState.SHELVED
        return self.base

    @property
    def active(self) -> bool:
        """B or C: an alarm standing in the control room."""
        return self.state in _ACTIVE


@dataclass(frozen=True, slots=True)
class Transition:
    """One journal entry: what happened to which alarm, when, by whom, from what to what."""

    alarm: str
    event: AlarmEvent
    ts_ns: int
    before: AlarmState
    after: AlarmState
    status: AlarmStatus
    user: str = ""
    comment: str = ""
    value: float | None = None


@dataclass(slots=True)
class _Pending:
    """A condition change waiting out its delay."""

    to: bool
    since_ns: int
    value: float | None


class Alarm:
    """One alarm's state machine.

    Args:
        name: the alarm's path (its rule's), journaled with every transition.
        on_delay_ns: how long the condition must hold before the alarm comes in.
        off_delay_ns: how long the condition must be gone before the alarm clears.
        status: where to start (:meth:`restore` after a restart); normal by default.
    """

    def __init__(
        self,
        name: str,
        *,
        on_delay_ns: int = 0,
        off_delay_ns: int = 0,
        status: AlarmStatus | None = None,
    ) -> None:
        if on_delay_ns < 0 or off_delay_ns < 0:
            raise ValueError("alarm delays must be >= 0")
        self.name = name
        self._on_delay = on_delay_ns
        self._off_delay = off_delay_ns
        self.status = status or AlarmStatus()
        self._pending: _Pending | None = None

    @classmethod
    def restore(
        cls, name: str, status: AlarmStatus, *, on_delay_ns: int = 0, off_delay_ns: int = 0
    ) -> Alarm:
        """The alarm as its last journaled status left it (a pending delay starts over)."""
        return cls(name, on_delay_ns=on_delay_ns, off_delay_ns=off_delay_ns, status=status)

    @property
    def state(self) -> AlarmState:
        """The state shown."""
        return self.status.state

    # ------------------------------------------------------------------ the process
    def observe(self, condition: bool, ts_ns: int, value: float | None = None) -> list[Transition]:
        """Take the condition as evaluated at a point's timestamp ``ts_ns``.

        A point older than the newest one taken is ignored (late data does not move an
        alarm back in time).
        """
        if ts_ns < self.status.seen_ns:
            return []
        out = self.tick(ts_ns)
        self.status = replace(self.status, seen_ns=ts_ns)
        pending = self._pending
        if condition == self.status.condition:
            self._pending = None  # a blip shorter than its delay: nothing happened
            return out
        if pending is not None and pending.to == condition:
            return out  # already waiting for this change
        delay = self._on_delay if condition else self._off_delay
        if delay == 0:
            self._pending = None
            return out + self._condition(condition, ts_ns, value)
        self._pending = _Pending(condition, ts_ns, value)
        return out

    def tick(self, now_ns: int) -> list[Transition]:
        """Let time pass: a delay that ran out takes effect (at its own end), an
        expired shelve ends."""
        out: list[Transition] = []
        pending = self._pending
        if pending is not None:
            due = pending.since_ns + (self._on_delay if pending.to else self._off_delay)
            if due <= now_ns:
                self._pending = None
                out += self._condition(pending.to, due, pending.value)
        until = self.status.shelved_until_ns
        if until is not None and until <= now_ns:
            out += self._unhide(AlarmEvent.SHELVE_EXPIRED, until, unshelve=True)
        return out

    def _condition(self, on: bool, ts_ns: int, value: float | None) -> list[Transition]:
        before = self.status
        if before.state in _HIDDEN:
            self.status = replace(before, condition=on, value=value)
            return [self._record(AlarmEvent.CONDITION, ts_ns, before, value=value)]
        base = before.base
        if on:
            base = AlarmState.UNACKNOWLEDGED  # from A, or back from D
            event = AlarmEvent.ACTIVATED
        else:
            base = (
                AlarmState.NORMAL
                if base is AlarmState.ACKNOWLEDGED
                else AlarmState.RETURNED_UNACKNOWLEDGED
            )
            event = AlarmEvent.CLEARED
        self.status = replace(before, condition=on, base=base, since_ns=ts_ns, value=value)
        return [self._record(event, ts_ns, before, value=value)]

    # ------------------------------------------------------------------ operators
    def acknowledge(self, ts_ns: int, *, user: str, comment: str = "") -> list[Transition]:
        """B → C, D → A.

        Raises:
            PayloadError: nothing to acknowledge (field ``state``).
        """
        before = self.status
        if before.state is AlarmState.UNACKNOWLEDGED:
            after = AlarmState.ACKNOWLEDGED
        elif before.state is AlarmState.RETURNED_UNACKNOWLEDGED:
            after = AlarmState.NORMAL
        else:
            raise PayloadError("state", f"{self.name} is {before.state}: nothing to acknowledge")
        self.status = replace(before, base=after, since_ns=ts_ns)
        return [self._record(AlarmEvent.ACKNOWLEDGED, ts_ns, before, user=user, comment=comment)]

    def shelve(
        self, ts_ns: int, *, until_ns: int, user: str, comment: str = ""
    ) -> list[Transition]:
        """Hide the alarm until ``until_ns`` (F); shelving again moves the expiry.

        Raises:
            PayloadError: the expiry is not in the future (``until``), or the alarm is
                out of service or suppressed (``state``).
        """
        if until_ns <= ts_ns:
            raise PayloadError("until", "a shelve must end in the future")
        before = self.status
        if before.out_of_service or before.suppressed:
            raise PayloadError("state", f"{self.name} is {before.state}: it cannot be shelved")
        self.status = replace(before, shelved_until_ns=until_ns, since_ns=ts_ns)
        return [self._record(AlarmEvent.SHELVED, ts_ns, before, user=user, comment=comment)]

    def unshelve(self, ts_ns: int, *, user: str, comment: str = "") -> list[Transition]:
        """End a shelve before its expiry.

        Raises:
            PayloadError: the alarm is not shelved (``state``).
        """
        if self.status.shelved_until_ns is None:
            raise PayloadError("state", f"{self.name} is {self.state}: it is not shelved")
        return self._unhide(AlarmEvent.UNSHELVED, ts_ns, user=user, comment=comment, unshelve=True)

    def suppress(self, ts_ns: int, *, on: bool, reason: str = "") -> list[Transition]:
        """Suppression by design (G) begins (``on``) or ends; a repeat changes nothing."""
        before = self.status
        if before.suppressed == on:
            return []
        if not on:
            return self._unhide(AlarmEvent.UNSUPPRESSED, ts_ns, comment=reason, suppressed=False)
        self.status = replace(before, suppressed=True, shelved_until_ns=None, since_ns=ts_ns)
        return [self._record(AlarmEvent.SUPPRESSED, ts_ns, before, comment=reason)]

    def set_in_service(
        self, ts_ns: int, *, in_service: bool, user: str, comment: str = ""
    ) -> list[Transition]:
        """Take the alarm out of service (H) or return it; a repeat changes nothing."""
        before = self.status
        if before.out_of_service != in_service:
            return []
        if in_service:
            return self._unhide(
                AlarmEvent.RETURNED_TO_SERVICE,
                ts_ns,
                user=user,
                comment=comment,
                out_of_service=False,
            )
        self.status = replace(before, out_of_service=True, shelved_until_ns=None, since_ns=ts_ns)
        return [
            self._record(AlarmEvent.REMOVED_FROM_SERVICE, ts_ns, before, user=user, comment=comment)
        ]

    def add_comment(self, ts_ns: int, *, user: str, comment: str) -> list[Transition]:
        """A note in the journal; the state does not change.

        Raises:
            PayloadError: an empty comment (``comment``).
        """
        if not comment.strip():
            raise PayloadError("comment", "a comment needs text")
        return [self._record(AlarmEvent.COMMENTED, ts_ns, self.status, user=user, comment=comment)]

    # ------------------------------------------------------------------ helpers
    def _unhide(
        self,
        event: AlarmEvent,
        ts_ns: int,
        *,
        user: str = "",
        comment: str = "",
        unshelve: bool = False,
        suppressed: bool | None = None,
        out_of_service: bool | None = None,
    ) -> list[Transition]:
        before = self.status
        status = before
        if unshelve:
            status = replace(status, shelved_until_ns=None)
        if suppressed is not None:
            status = replace(status, suppressed=suppressed)
        if out_of_service is not None:
            status = replace(status, out_of_service=out_of_service)
        if status.state not in _HIDDEN:  # visible again: a standing condition re-alarms
            base = AlarmState.UNACKNOWLEDGED if status.condition else AlarmState.NORMAL
            status = replace(status, base=base)
        self.status = replace(status, since_ns=ts_ns)
        return [self._record(event, ts_ns, before, user=user, comment=comment)]

    def _record(
        self,
        event: AlarmEvent,
        ts_ns: int,
        before: AlarmStatus,
        *,
        user: str = "",
        comment: str = "",
        value: float | None = None,
    ) -> Transition:
        return Transition(
            self.name,
            event,
            ts_ns,
            before.state,
            self.status.state,
            self.status,
            user=user,
            comment=comment,
            value=value,
        )
