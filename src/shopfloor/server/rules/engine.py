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

from shopfloor.errors import PayloadError, UnknownTagError
from shopfloor.model import LiveBatch, PointBatch
from shopfloor.runtime.channels import Channel
from shopfloor.runtime.clock import Clock, SystemClock
from shopfloor.server.rules.alarms import Alarm, AlarmState, AlarmStatus, Transition
from shopfloor.server.rules.commands import Action, Command, RemoteCommands
from shopfloor.server.rules.evaluator import AlarmEvaluator
from shopfloor.server.rules.journal import (
    AlarmJournal,
    Journal,
    JournalEntry,
    JournalError,
    SendAttempt,
)
from shopfloor.server.rules.kpis import AlarmKpis, alarm_kpis
from shopfloor.server.rules.rule import AlarmRule, rule_of, rules_from_config

__all__ = ["ActiveAlarm", "AlarmEngine", "AlarmRule", "rule_of", "rules_from_config"]

logger = logging.getLogger(__name__)

T = TypeVar("T")


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
        journal_path: the journal file; a restart continues from the states it holds. Or
            a function opening another :class:`~.journal.Journal` (called on the
            engine's thread).
        clock: wall time for operator actions and delay ticks.
        tick_s: how often delays and shelve expiries are checked when no point comes.
        follow: evaluate nothing: others (the ingest workers owning the alarm
            partitions, :mod:`~.partitioned`) journal the transitions; this engine reads
            the alarms' states from the journal every ``tick_s`` and serves them. An
            operator action is queued in the shared journal (``alarm_commands``) for the
            worker owning the alarm, which applies and journals it; this engine waits up
            to ``remote_timeout_s`` for its outcome (:meth:`_remote`).
        remote_timeout_s: how long an operator action waits for the owning worker.
    """

    def __init__(
        self,
        rules: Sequence[AlarmRule],
        journal_path: Path | Callable[[], Journal],
        *,
        clock: Clock | None = None,
        tick_s: float = 1.0,
        follow: bool = False,
        remote_timeout_s: float = 10.0,
    ) -> None:
        self._remote_timeout_s = remote_timeout_s
        self._clock = clock or SystemClock()
        self._tick_s = tick_s
        self._journal_path = journal_path
        self._journal: Journal | None = None
        self.follow = follow
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
        """Set the rules and the evaluator for them (every alarm normal until restored)."""
        self._eval = AlarmEvaluator(rules)
        self.rules = self._eval.rules
        self._index = self._eval.index

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        """Open the journal and restore each alarm's last journaled state."""
        await self._run(self._open)

    def _open(self) -> None:
        path = self._journal_path
        self._journal = AlarmJournal(path) if isinstance(path, Path) else path()
        self._restore(self._journal.statuses())

    def _restore(self, saved: dict[str, AlarmStatus], kept: dict[str, Alarm] | None = None) -> None:
        """Give every rule its alarm in the state ``saved`` holds (normal without one), and
        its condition as it was: no re-alarm on a restart or an edit of the rules."""
        self._eval.restore(saved, kept)
        self._alarms = list(self._eval.alarms)
        # What the event loop reads (alarms(), rule(), state_of()), swapped in one store so
        # a reader never pairs the new rules with the old alarms.
        self._view = (self.rules, self._index, self._eval.alarms)

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
        """Follow the live channel and the clock until cancelled (``follow``: the
        journal)."""
        if self.follow:
            while True:
                await self._clock.sleep(self._tick_s)
                try:
                    await self._run(lambda: self._restore(self._opened().statuses()))
                except JournalError as err:
                    logger.warning("alarm states not read from the shared journal: %s", err)
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
        if live.historical or self.follow:
            self.historical_skipped += 1
            return []
        return await self._run(lambda: self._process(live.batch))

    def _process(self, batch: PointBatch) -> list[Transition]:
        self.batches += 1
        return self._journaled(self._eval.process(batch))

    async def tick(self) -> list[Transition]:
        """Let delays and shelves run out at the clock's time."""
        now = self._clock.now_ns()
        return await self._run(lambda: self._journaled(self._eval.tick(now)))

    # ------------------------------------------------------------------ operators
    async def acknowledge(self, name: str, *, user: str, comment: str = "") -> Transition:
        """Acknowledge an alarm (B → C, D → A).

        Raises:
            UnknownTagError: no alarm has that name.
            PayloadError: nothing to acknowledge.
        """
        return await self._one(name, Command("acknowledge", user, comment))

    async def shelve(self, name: str, *, until_ns: int, user: str, comment: str = "") -> Transition:
        """Shelve an alarm until ``until_ns``."""
        return await self._one(name, Command("shelve", user, comment, until_ns))

    async def unshelve(self, name: str, *, user: str, comment: str = "") -> Transition:
        """End a shelve now."""
        return await self._one(name, Command("unshelve", user, comment))

    async def set_in_service(
        self, name: str, *, in_service: bool, user: str, comment: str = ""
    ) -> Transition | None:
        """Take an alarm out of service or return it (None: it already was)."""
        action: Action = "in_service" if in_service else "out_of_service"
        return await self._act(name, Command(action, user, comment), allow_none=True)

    async def comment(self, name: str, *, user: str, comment: str) -> Transition:
        """Add a comment to an alarm's journal."""
        return await self._one(name, Command("comment", user, comment))

    async def _one(self, name: str, command: Command) -> Transition:
        done = await self._act(name, command)
        assert done is not None  # _act raises rather than return None here
        return done

    async def _act(
        self, name: str, command: Command, *, allow_none: bool = False
    ) -> Transition | None:
        if name not in self._view[1]:
            raise UnknownTagError(f"no alarm named {name!r}")
        if self.follow:
            done = await self._remote(name, command)
        else:
            now = self._clock.now_ns()
            done = await self._run(
                lambda: self._journaled(command.apply(self._alarm_named(name), now))
            )
        if not done:
            if allow_none:
                return None
            raise PayloadError("alarm", f"{name}: nothing changed")
        return done[-1]

    async def _remote(self, name: str, command: Command) -> list[Transition]:
        """Follow mode: have the alarm's owner apply ``command``; wait for its outcome.

        Raises:
            PayloadError: the owner refused it (its field), or no owner answered in time.
        """
        journal = self._opened()
        if not isinstance(journal, RemoteCommands):
            raise PayloadError("alarm", f"{name}: this journal takes no operator actions")
        request = await self._run(lambda: journal.request(name, command))
        deadline = asyncio.get_running_loop().time() + self._remote_timeout_s
        while (outcome := await self._run(lambda: journal.outcome(request))) is None:
            if asyncio.get_running_loop().time() > deadline:
                raise PayloadError(
                    "alarm",
                    f"{name}: no ingest worker took the action within "
                    f"{self._remote_timeout_s:g} s (is one running?); it is still queued",
                )
            await asyncio.sleep(0.05)
        if outcome.error is not None:
            raise PayloadError(outcome.error_field or "alarm", outcome.error)
        await self._run(lambda: self._restore(self._opened().statuses()))  # show it at once
        return list(outcome.transitions)

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
        return self._eval.alarm_named(name)

    def _journaled(self, transitions: list[Transition]) -> list[Transition]:
        """Journal (on disk), then publish; on the worker thread."""
        if transitions:
            self._opened().append(transitions)
            loop = self._loop
            for t in transitions:
                loop.call_soon_threadsafe(self.events.publish, t)
        return transitions

    def _opened(self) -> Journal:
        if self._journal is None:
            raise RuntimeError("the alarm engine is not started")
        return self._journal

    async def _run(self, fn: Callable[[], T]) -> T:
        self._loop = asyncio.get_running_loop()
        return await self._loop.run_in_executor(self._worker, fn)
