"""The alarm engine: live batches in, journaled ISA-18.2 transitions out.

It subscribes to the live channel, so alarms never wait for the historian's commit.
Each batch is evaluated as columns (:class:`~.conditions.Conditions`); the few points
where a condition changed drive their alarms' state machines (:class:`~.alarms.Alarm`);
the transitions are journaled (:class:`~.journal.AlarmJournal`, durable) and only then
published on :attr:`AlarmEngine.events` for screens and notifications. Batches an edge
sends from its backlog (``historical``) raise no alarms: they are older than what is
shown. Operator actions (acknowledge, shelve, …) take the same path.

All of it runs on one worker thread, in order: numpy and SQLite never block the event
loop, and an operator's acknowledgement cannot overtake the activation it answers.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np

from shopfloor.config.alarms import AlarmSpec, AlarmsSection
from shopfloor.errors import PayloadError, UnknownTagError
from shopfloor.model import LiveBatch, PointBatch
from shopfloor.model.expressions import compile_expression
from shopfloor.runtime.channels import Channel
from shopfloor.runtime.clock import Clock, SystemClock
from shopfloor.server.rules.alarms import Alarm, AlarmState, AlarmStatus, Transition
from shopfloor.server.rules.conditions import ConditionKind, Conditions, ExpressionConditions
from shopfloor.server.rules.journal import AlarmJournal, JournalEntry, SendAttempt
from shopfloor.server.rules.kpis import AlarmKpis, alarm_kpis

__all__ = ["ActiveAlarm", "AlarmEngine", "AlarmRule", "rule_of", "rules_from_config"]

logger = logging.getLogger(__name__)

T = TypeVar("T")

_KINDS = {
    "HH": ConditionKind.HIGH,
    "H": ConditionKind.HIGH,
    "L": ConditionKind.LOW,
    "LL": ConditionKind.LOW,
    "state": ConditionKind.STATE,
    "bad_quality": ConditionKind.BAD_QUALITY,
    "roc": ConditionKind.RATE,
    "deviation": ConditionKind.DEVIATION,
}


@dataclass(frozen=True, slots=True)
class AlarmRule:
    """One alarm on one tag (see :class:`~shopfloor.config.alarms.AlarmRuleConfig`)."""

    name: str
    tag: str
    kind: str
    limit: float | None = None
    deadband: float = 0.0
    on_delay_s: float = 0.0
    off_delay_s: float = 0.0
    priority: str = "medium"
    message: str = "{tag} {kind}: {value}"
    setpoint: str | None = None
    expression: str | None = None
    inputs: tuple[tuple[str, str], ...] = ()
    """``expression`` rules: (name, tag path) of each input."""

    def text(self, value: float | None) -> str:
        """The message with its fields filled in (a broken template is shown as written)."""
        try:
            return self.message.format(tag=self.tag, kind=self.kind, value=value, limit=self.limit)
        except (KeyError, IndexError, ValueError, TypeError):  # e.g. {value:.1f} of None
            return self.message


@dataclass(frozen=True, slots=True)
class ActiveAlarm:
    """An alarm as a screen lists it: ``value`` is the one that last changed its condition."""

    rule: AlarmRule
    status: AlarmStatus

    @property
    def value(self) -> float | None:
        """The value that last changed its condition."""
        return self.status.value

    @property
    def state(self) -> AlarmState:
        """The state shown."""
        return self.status.state


class AlarmEngine:
    """Alarms for ``rules``, journaled in ``journal_path``.

    Args:
        rules: the alarm rules (names unique).
        journal_path: the journal file; a restart continues from the states it holds.
        clock: wall time for operator actions and delay ticks.
        tick_s: how often delays and shelve expiries are checked when no point comes.
    """

    def __init__(
        self,
        rules: Sequence[AlarmRule],
        journal_path: Path,
        *,
        clock: Clock | None = None,
        tick_s: float = 1.0,
    ) -> None:
        self._clock = clock or SystemClock()
        self._tick_s = tick_s
        self._journal_path = journal_path
        self._journal: AlarmJournal | None = None
        self._compile(rules)
        self._alarms: list[Alarm] = []
        self._view: tuple[tuple[AlarmRule, ...], dict[str, int], tuple[Alarm, ...]] = (
            self.rules,
            self._index,
            (),
        )
        self._worker = ThreadPoolExecutor(1, thread_name_prefix="alarm-engine")
        self.events: Channel[Transition] = Channel("alarm-events", maxsize=4096)
        """Every journaled transition, in order."""
        self.batches = 0
        self.historical_skipped = 0
        self._closed = False

    def _compile(self, rules: Sequence[AlarmRule]) -> None:
        """Set the rules and the condition tables evaluating them (no alarm states)."""
        names = [r.name for r in rules]
        if len(set(names)) != len(names):
            raise ValueError("alarm names must be unique")
        self.rules = tuple(rules)
        self._index = {r.name: i for i, r in enumerate(self.rules)}
        watched = [
            t for r in rules for t in (r.tag, r.setpoint, *dict(r.inputs).values()) if t is not None
        ]
        self._tag_ids = {tag: i for i, tag in enumerate(dict.fromkeys(watched))}
        self._plain = np.array([i for i, r in enumerate(rules) if r.kind != "expression"], np.intp)
        self._combined = np.array(
            [i for i, r in enumerate(rules) if r.kind == "expression"], np.intp
        )
        plain = [rules[i] for i in self._plain]
        self._conditions = Conditions(
            [self._tag_ids[r.tag] for r in plain],
            [_KINDS[r.kind] for r in plain],
            [np.nan if r.limit is None else r.limit for r in plain],
            [r.deadband for r in plain],
            [-1 if r.setpoint is None else self._tag_ids[r.setpoint] for r in plain],
        )
        self._expressions = ExpressionConditions(
            [
                (
                    compile_expression(rules[i].expression or "", set(dict(rules[i].inputs))),
                    {name: self._tag_ids[tag] for name, tag in rules[i].inputs},
                )
                for i in self._combined
            ]
        )

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        """Open the journal and restore each alarm's last journaled state."""
        await self._run(self._open)

    def _open(self) -> None:
        self._journal = AlarmJournal(self._journal_path)
        self._restore(self._journal.statuses())

    def _restore(self, saved: dict[str, AlarmStatus], kept: dict[str, Alarm] | None = None) -> None:
        """Give every rule its alarm in the state ``saved`` holds (normal without one), and
        its condition as it was: no re-alarm on a restart or an edit of the rules."""
        kept = kept or {}
        alarms = []
        for rule in self.rules:
            if rule.name in kept:  # its state, pending delays and shelve go on
                alarms.append(kept[rule.name])
                continue
            alarm = Alarm(
                rule.name,
                on_delay_ns=int(rule.on_delay_s * 1e9),
                off_delay_ns=int(rule.off_delay_s * 1e9),
                status=saved.get(rule.name),
            )
            alarms.append(alarm)
        for table, positions in (
            (self._conditions, self._plain),
            (self._expressions, self._combined),
        ):
            for k, i in enumerate(positions.tolist()):
                status = saved.get(self.rules[i].name)
                if status is not None:
                    table.active[k] = status.condition
                    table.seen[k] = status.seen_ns
        self._alarms = alarms
        # What the event loop reads (alarms(), rule(), state_of()), swapped in one store so
        # a reader never pairs the new rules with the old alarms.
        self._view = (self.rules, self._index, tuple(alarms))

    async def replace_rules(self, rules: Sequence[AlarmRule]) -> None:
        """Evaluate ``rules`` from now on (the asset model was edited).

        An alarm whose rule stays (same name and definition) keeps its state, delays and
        shelve; a new one starts where the journal last left an alarm of that name (as after
        a restart); an alarm whose rule is gone stops, its journal history is kept. Runs on
        the engine's thread, between two batches.

        Raises:
            ValueError: two rules share a name.
        """
        await self._run(lambda: self._replace(rules))

    def _replace(self, rules: Sequence[AlarmRule]) -> None:
        wanted = set(rules)
        kept = {
            rule.name: alarm
            for rule, alarm in zip(self.rules, self._alarms, strict=True)
            if rule in wanted
        }
        saved = self._opened().statuses()
        saved.update({name: alarm.status for name, alarm in kept.items()})
        self._compile(rules)
        self._restore(saved, kept)
        logger.info("alarm rules replaced: %d rules, %d kept", len(self.rules), len(kept))

    async def close(self) -> None:
        """Finish the work queued and close the journal. Idempotent."""
        if self._closed:
            return
        self._closed = True
        await asyncio.get_running_loop().run_in_executor(self._worker, self._close)
        self._worker.shutdown(wait=True)

    def _close(self) -> None:
        if self._journal is not None:
            self._journal.close()
            self._journal = None

    async def run(self, live: Channel[LiveBatch]) -> None:
        """Follow the live channel and the clock until cancelled."""
        async with live.subscribe("alarm-engine") as sub, asyncio.TaskGroup() as tasks:
            tasks.create_task(self._ticks(), name="alarm-ticks")
            async for item in sub:
                await self.process(item)

    async def _ticks(self) -> None:
        while True:
            await self._clock.sleep(self._tick_s)
            await self.tick()

    # ------------------------------------------------------------------ the process
    async def process(self, live: LiveBatch) -> list[Transition]:
        """Evaluate one live batch; the transitions it caused, journaled."""
        if live.historical:
            self.historical_skipped += 1
            return []
        return await self._run(lambda: self._process(live.batch))

    def _process(self, batch: PointBatch) -> list[Transition]:
        self.batches += 1
        lookup = np.array([self._tag_ids.get(t, -1) for t in batch.tags], np.int64)
        if not len(lookup) or lookup.max() < 0:
            return []
        tags = lookup[batch.tag_index]
        watched = tags >= 0
        columns = (tags[watched], batch.ts[watched], batch.value[watched], batch.quality[watched])
        out: list[Transition] = []
        for table, positions in (
            (self._conditions, self._plain),
            (self._expressions, self._combined),
        ):
            changes = table.evaluate(*columns)
            for rule, ts, active, value in zip(
                positions[changes.rule].tolist(),
                changes.ts.tolist(),
                changes.active.tolist(),
                changes.value.tolist(),
                strict=True,
            ):
                out += self._alarms[rule].observe(active, ts, value)
        return self._journaled(out)

    async def tick(self) -> list[Transition]:
        """Let delays and shelves run out at the clock's time."""
        now = self._clock.now_ns()
        return await self._run(
            lambda: self._journaled([t for alarm in self._alarms for t in alarm.tick(now)])
        )

    # ------------------------------------------------------------------ operators
    async def acknowledge(self, name: str, *, user: str, comment: str = "") -> Transition:
        """Acknowledge an alarm (B → C, D → A).

        Raises:
            UnknownTagError: no alarm has that name.
            PayloadError: nothing to acknowledge.
        """
        return await self._one(name, lambda a, now: a.acknowledge(now, user=user, comment=comment))

    async def shelve(self, name: str, *, until_ns: int, user: str, comment: str = "") -> Transition:
        """Shelve an alarm until ``until_ns``."""
        return await self._one(
            name, lambda a, now: a.shelve(now, until_ns=until_ns, user=user, comment=comment)
        )

    async def unshelve(self, name: str, *, user: str, comment: str = "") -> Transition:
        """End a shelve now."""
        return await self._one(name, lambda a, now: a.unshelve(now, user=user, comment=comment))

    async def set_in_service(
        self, name: str, *, in_service: bool, user: str, comment: str = ""
    ) -> Transition | None:
        """Take an alarm out of service or return it (None: it already was)."""
        return await self._act(
            name,
            lambda a, now: a.set_in_service(now, in_service=in_service, user=user, comment=comment),
            allow_none=True,
        )

    async def comment(self, name: str, *, user: str, comment: str) -> Transition:
        """Add a comment to an alarm's journal."""
        return await self._one(name, lambda a, now: a.add_comment(now, user=user, comment=comment))

    async def _one(self, name: str, action: Callable[[Alarm, int], list[Transition]]) -> Transition:
        done = await self._act(name, action)
        assert done is not None  # _act raises rather than return None here
        return done

    async def _act(
        self,
        name: str,
        action: Callable[[Alarm, int], list[Transition]],
        *,
        allow_none: bool = False,
    ) -> Transition | None:
        if name not in self._view[1]:
            raise UnknownTagError(f"no alarm named {name!r}")
        now = self._clock.now_ns()
        done = await self._run(lambda: self._journaled(action(self._alarm_named(name), now)))
        if not done:
            if allow_none:
                return None
            raise PayloadError("alarm", f"{name}: nothing changed")
        return done[-1]

    # ------------------------------------------------------------------ reading
    def alarms(self, *, active_only: bool = False) -> list[ActiveAlarm]:
        """Every alarm (or only those not normal) with its status and last value."""
        out = []
        rules, _, alarms = self._view
        for rule, alarm in zip(rules, alarms, strict=True):
            if active_only and alarm.state is AlarmState.NORMAL:
                continue
            out.append(ActiveAlarm(rule, alarm.status))
        return out

    def rule(self, name: str) -> AlarmRule | None:
        """The rule of an alarm, by name."""
        rules, index, _ = self._view
        i = index.get(name)
        return None if i is None else rules[i]

    async def journal(
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
        return await self._run(
            lambda: self._opened().entries(
                alarm=alarm,
                start_ns=start_ns,
                end_ns=end_ns,
                after_seq=after_seq,
                before_seq=before_seq,
                newest_first=newest_first,
                limit=limit,
            )
        )

    async def kpis(self, *, start_ns: int, end_ns: int) -> AlarmKpis:
        """Alarm system performance over ``[start_ns, end_ns)`` from the journal."""
        names, ts = await self._run(lambda: self._opened().activations(start_ns, end_ns))
        return alarm_kpis(names, ts, start_ns=start_ns, end_ns=end_ns)

    async def log_attempt(self, attempt: SendAttempt) -> None:
        """Journal one try to send a notification."""
        await self._run(lambda: self._opened().log_attempt(attempt))

    async def attempts(self, *, alarm: str | None = None, limit: int = 1000) -> list[SendAttempt]:
        """Notification attempts, in order."""
        return await self._run(lambda: self._opened().attempts(alarm=alarm, limit=limit))

    def state_of(self, name: str) -> AlarmState | None:
        """The state an alarm shows now (None: no such alarm)."""
        _, index, alarms = self._view
        i = index.get(name)
        return None if i is None or i >= len(alarms) else alarms[i].state

    # ------------------------------------------------------------------ helpers
    def _alarm_named(self, name: str) -> Alarm:
        """On the worker: the alarm called ``name`` now (its rule may have gone meanwhile)."""
        i = self._index.get(name)
        if i is None:
            raise UnknownTagError(f"no alarm named {name!r}")
        return self._alarms[i]

    def _journaled(self, transitions: list[Transition]) -> list[Transition]:
        """Journal (on disk), then publish; on the worker thread."""
        if transitions:
            self._opened().append(transitions)
            loop = self._loop
            for t in transitions:
                loop.call_soon_threadsafe(self.events.publish, t)
        return transitions

    def _opened(self) -> AlarmJournal:
        if self._journal is None:
            raise RuntimeError("the alarm engine is not started")
        return self._journal

    async def _run(self, fn: Callable[[], T]) -> T:
        self._loop = asyncio.get_running_loop()
        return await self._loop.run_in_executor(self._worker, fn)


def rule_of(
    spec: AlarmSpec,
    *,
    name: str,
    tag: str,
    setpoint: str | None = None,
    inputs: dict[str, str] | None = None,
) -> AlarmRule:
    """The engine's rule for an alarm as configured (on a tag, or from a template)."""
    return AlarmRule(
        name=name,
        tag=tag,
        kind=spec.kind,
        limit=spec.limit,
        deadband=spec.deadband,
        on_delay_s=spec.on_delay_s,
        off_delay_s=spec.off_delay_s,
        priority=spec.priority,
        message=spec.message,
        setpoint=setpoint,
        expression=spec.expression,
        inputs=tuple((inputs if inputs is not None else spec.inputs).items()),
    )


def rules_from_config(section: AlarmsSection) -> list[AlarmRule]:
    """The engine's rules from an ``[alarms]`` configuration section."""
    return [rule_of(r, name=r.alarm_name, tag=r.tag, setpoint=r.setpoint) for r in section.rules]
