"""The analytics the API asks: OEE over any range and grouping, stop events, Pareto,
operator reasons. It reads the historian, computes in an executor and keeps its file on
one thread of its own, so the event loop only awaits.

An OEE range is answered from stored hours where they exist, and computed on demand for
the rest (the open hour, the partial hours at the edges, hours not yet computed or
invalidated by a reason change). Both paths compute with the same function, so the
answer does not depend on which hours happened to be stored.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pyarrow as pa

from shopfloor.config.analytics import AnalyticsSection
from shopfloor.errors import PayloadError
from shopfloor.model import now_ns
from shopfloor.model.points import is_good
from shopfloor.server.analytics.downtime import LOSS_NAMES, Steps
from shopfloor.server.analytics.energy import EnergySlices
from shopfloor.server.analytics.grouped import SumSource, grouped_sums
from shopfloor.server.analytics.machines import GOOD, PARTS, REASON, SCRAP, STATE, Machine
from shopfloor.server.analytics.oee import (
    COMPONENTS,
    HOUR_NS,
    Counter,
    MachineSeries,
    Slices,
    compute_slices,
    machine_runs,
    read_window,
    summarize,
)
from shopfloor.server.analytics.shifts import ShiftCalendar
from shopfloor.server.analytics.store import AnalyticsStore
from shopfloor.server.analytics.store_base import AnalyticsStorage, ReasonAssignment
from shopfloor.server.historian.base import Historian

__all__ = ["GROUPS", "Analytics", "StopEvent"]

logger = logging.getLogger(__name__)

T = TypeVar("T")
GROUPS = ("hour", "shift", "day", "none")
_PAGE = 100_000
_NAMES = (STATE, REASON, PARTS, GOOD, SCRAP)
_EVENT_LOOKBACK_NS = 24 * HOUR_NS  # how far back a stop's start is looked for


@dataclass(frozen=True, slots=True)
class StopEvent:
    """One stop of one machine.

    Attributes:
        machine: the machine.
        start_ns: when it began (the read window's start if ``start_known`` is false).
        end_ns: when it ended, or now while it lasts.
        ongoing: whether it still lasts.
        start_known: false when it began more than a day before the range asked.
        state: the machine state during it.
        reason: the reason code in force (operator-assigned if ``assignment``).
        loss: ``failure``, ``setup`` or ``minor``.
        micro: whether it is (part of) a micro-stop.
        unplanned_ns: its time inside planned production time.
        unplanned_in_range_ns: the same inside the range asked.
        shift: the shift worked when it began, if any.
        assignment: the operator's assignment, if any.
    """

    machine: Machine
    start_ns: int
    end_ns: int
    ongoing: bool
    start_known: bool
    state: int
    reason: int
    loss: str
    micro: bool
    unplanned_ns: int
    unplanned_in_range_ns: int
    shift: str | None
    assignment: ReasonAssignment | None


class Analytics:
    """OEE and downtime of ``machines``.

    Args:
        historian: where the points are.
        machines: the machines covered (from the asset model).
        section: the ``[analytics]`` settings.
        data_dir: where the analytics file goes (``section.store`` is relative to it).
        clock: the wall clock in UTC ns.
        store: opens the store instead of the file (the shared PostgreSQL one of a
            scaled-out installation); called on the store's thread.
    """

    def __init__(
        self,
        historian: Historian,
        machines: Sequence[Machine],
        section: AnalyticsSection,
        data_dir: Path,
        *,
        clock: Callable[[], int] = now_ns,
        store: Callable[[], AnalyticsStorage] | None = None,
    ) -> None:
        self.historian = historian
        self.machines = list(machines)
        self.section = section
        self.settings = section.downtime
        self.calendar = ShiftCalendar(section.shifts)
        self.clock = clock
        self.path = data_dir / section.store
        self._open: Callable[[], AnalyticsStorage] = store or partial(AnalyticsStore, self.path)
        self._store: AnalyticsStorage | None = None
        self._db = ThreadPoolExecutor(1, thread_name_prefix="analytics-db")
        self._by_name = {m.path: m for m in machines} | {m.id: m for m in machines}

    async def start(self) -> None:
        """Open the analytics file (or the shared store).

        Raises:
            AnalyticsStoreError: it cannot be opened.
        """
        loop = asyncio.get_running_loop()
        self._store = await loop.run_in_executor(self._db, self._open)
        fingerprint = self.fingerprint()
        if await self._db_call(lambda s: s.settings_changed(fingerprint)):
            logger.info("analytics settings changed: stored OEE hours will be computed again")

    def fingerprint(self) -> str:
        """A digest of everything stored hours depend on besides the points: the shift
        calendar, the downtime settings and each machine's ideal cycle time."""
        text = json.dumps(
            {
                "shifts": self.section.shifts.model_dump(mode="json"),
                "downtime": self.section.downtime.model_dump(mode="json"),
                "machines": {m.path: m.ideal_cycle_s for m in self.machines},
            },
            sort_keys=True,
        )
        return hashlib.sha256(text.encode()).hexdigest()

    async def close(self) -> None:
        """Close the file and the thread. Idempotent."""
        if self._store is not None:
            store, self._store = self._store, None
            await asyncio.get_running_loop().run_in_executor(self._db, store.close)
        self._db.shutdown(wait=True)

    async def store_call(self, fn: Callable[[AnalyticsStorage], T]) -> T:
        """Run ``fn`` on the analytics store on its own thread (for the energy service,
        which stores its hours beside OEE's)."""
        return await self._db_call(fn)

    async def _db_call(self, fn: Callable[[AnalyticsStorage], T]) -> T:
        store = self._store
        if store is None:
            raise RuntimeError("analytics not started")
        return await asyncio.get_running_loop().run_in_executor(self._db, fn, store)

    # ------------------------------------------------------------ machines
    def machine(self, name: str, *, field: str = "equipment") -> Machine:
        """A machine by id or path.

        Raises:
            PayloadError: no machine of that name has a state tag.
        """
        found = self._by_name.get(name.strip("/"))
        if found is None:
            raise PayloadError(field, f"{field}: no machine {name!r:.80} with a state tag")
        return found

    def select(
        self, *, equipment: str | None, line: str | None, oee_only: bool = False
    ) -> list[Machine]:
        """The machines named by ``equipment`` or ``line`` (all without either).

        Raises:
            PayloadError: both given, or neither names a known machine or line.
        """
        if equipment is not None and line is not None:
            raise PayloadError("line", "line: give equipment or line, not both")
        if equipment is not None:
            chosen = [self.machine(equipment)]
        elif line is not None:
            chosen = [m for m in self.machines if line in (m.line, m.path.rsplit("/", 2)[0])]
            if not chosen:
                raise PayloadError("line", f"line: no machines with a state tag on {line!r:.80}")
        else:
            chosen = list(self.machines)
        if oee_only:
            chosen = [m for m in chosen if m.oee]
            if not chosen:
                field = "equipment" if equipment is not None else "line"
                raise PayloadError(field, f"{field}: no machine there has parts and ideal_cycle_s")
        return chosen

    # ----------------------------------------------------------- reading
    async def read_all(self, path: str, lo: int, hi: int) -> pa.Table:
        """Every raw point of ``path`` in ``[lo, hi)``, read page by page."""
        pages = [await self.historian.read_raw(path, lo, hi, limit=_PAGE)]
        while pages[-1].num_rows == _PAGE:
            last = pages[-1].column("ts").cast(pa.int64())[-1].as_py()
            pages.append(await self.historian.read_raw(path, last + 1, hi, limit=_PAGE))
        return pa.concat_tables(pages)

    async def values_in_force(self, paths: Sequence[str], t: int) -> dict[str, float]:
        """The value of each of ``paths`` in force at ``t - 1``: one ``read_at`` for all of
        them (it costs about as much for one tag as for many); tags without one are left out."""
        before: dict[str, float] = {}
        if paths:
            at = await self.historian.read_at(list(paths), [t - 1])
            for p, v in zip(
                at.column("path").to_pylist(), at.column("value").to_pylist(), strict=True
            ):
                if v is not None:
                    before[str(p)] = float(v)
        return before

    async def values_before(
        self, machines: Sequence[Machine], t: int, known: set[str]
    ) -> dict[str, float]:
        """The value of every analytics tag of the machines in force at ``t - 1``."""
        return await self.values_in_force(
            [m.tag(n) for m in machines for n in _NAMES if m.tag(n) in known], t
        )

    async def series(
        self,
        m: Machine,
        lo: int,
        hi: int,
        *,
        known: set[str] | None = None,
        before: dict[str, float] | None = None,
    ) -> MachineSeries:
        """The machine's points over ``[lo, hi)`` (``hi`` no later than now).

        Args:
            m: the machine.
            lo: read start.
            hi: read end.
            known: the historian's tag paths (read if not given).
            before: :meth:`values_before` at ``lo`` (read if not given).
        """
        hi = min(hi, self.clock())
        if known is None:
            known = {t.path for t in await self.historian.tags()}
        if before is None:
            before = await self.values_before([m], lo, known)
        tables = {
            n: await self.read_all(m.tag(n), lo, hi) if m.tag(n) in known else None for n in _NAMES
        }
        overrides = await self._db_call(lambda s: s.reasons(m.path, lo, hi))

        def steps(n: str) -> Steps | None:
            t = tables[n]
            if t is None:
                return None
            ts, v, good = point_columns(t)
            # a Bad point (communication lost) makes the state unknown until the next
            v = np.where(good, v, np.nan)
            return Steps.of(lo, before.get(m.tag(n)), ts, v)

        def counter(n: str) -> Counter | None:
            t = tables[n]
            if t is None:
                return None
            ts, v, good = point_columns(t)
            keep = good & ~np.isnan(v)
            return Counter(ts[keep], v[keep], before.get(m.tag(n)))

        state = steps(STATE)
        return MachineSeries(
            path=m.path,
            equipment=m.id,
            ideal_cycle_s=m.ideal_cycle_s or 0.0,
            state=state if state is not None else Steps.of(lo, None, [], []),
            reason=steps(REASON),
            parts=counter(PARTS),
            good=counter(GOOD),
            scrap=counter(SCRAP),
            read_end=hi,
            overrides=overrides,
        )

    async def slices(
        self,
        m: Machine,
        start: int,
        end: int,
        *,
        known: set[str] | None = None,
        before: dict[str, float] | None = None,
    ) -> Slices:
        """The machine's OEE slices of ``[start, end)``, computed now from raw points
        (``before``: :meth:`values_before` at the start of :func:`~.oee.read_window`)."""
        lo, hi = read_window(self.calendar, self.settings, start, end)
        data = await self.series(m, lo, hi, known=known, before=before)
        if not data.state_known:  # never reported: not monitored, not a stopped machine
            return Slices.empty()
        return await asyncio.to_thread(
            compute_slices, data, self.calendar, self.settings, start, min(end, data.read_end)
        )

    # ---------------------------------------------------------------- OEE
    async def store_hours(
        self,
        m: Machine,
        start: int,
        end: int,
        *,
        known: set[str] | None = None,
        before: dict[str, float] | None = None,
    ) -> int:
        """Compute and store the whole hours of ``[start, end)``; how many slices (none if
        the machine's hours were forgotten meanwhile: the job computes them again)."""
        epoch = await self._db_call(lambda s: s.epoch(m.path))  # before reading reasons
        return await self.put_slices(
            m.path, await self.slices(m, start, end, known=known, before=before), epoch=epoch
        )

    async def put_slices(
        self, path: str, sl: Slices | EnergySlices, *, kind: str = "oee", epoch: int | None = None
    ) -> int:
        """Store computed hourly slices of ``path`` (of ``kind``); how many were stored
        (``epoch``: the store's, read before computing them)."""
        days = [self.calendar.day_of(int(t)) for t in sl.start]
        now = self.clock()
        names = self.calendar.names
        stored = await self._db_call(
            lambda s: s.put_hours(
                path, sl, shift_names=names, days=days, computed_ns=now, kind=kind, epoch=epoch
            )
        )
        return len(sl) if stored else 0

    async def forget(self, m: Machine, since_ns: int) -> None:
        """Forget the machine's stored hours from ``since_ns`` on: they are computed again."""
        await self._db_call(lambda s: s.invalidate(m.path, since_ns, 2**62))

    async def stored_hours(
        self, machines: Sequence[Machine], start: int, end: int
    ) -> dict[str, set[int]]:
        """Per machine path, the hours stored in ``[start, end)``."""
        paths = [m.path for m in machines]
        return await self._db_call(lambda s: s.stored_hours(paths, start, end))

    def sum_source(self) -> SumSource:
        """How OEE hours are stored and computed, for :func:`~.grouped.grouped_sums`."""

        async def known() -> set[str]:
            return {t.path for t in await self.historian.tags()}

        return SumSource(
            kind="oee",
            components=COMPONENTS,
            calendar=self.calendar,
            store_call=self._db_call,
            read_start=lambda lo, hi: read_window(self.calendar, self.settings, lo, hi)[0],
            values_before=self.values_before,
            slices=self.slices,
            known_paths=known,
        )

    async def oee(
        self, machines: Sequence[Machine], start: int, end: int, group: str
    ) -> list[tuple[tuple[object, ...], int, int, dict[str, Any]]]:
        """OEE of the machines together over ``[start, end)``, per group, oldest first.

        Returns:
            (group key, first slice start, last slice end, :func:`~.oee.summarize` output).
        """
        end = min(end, self.clock())
        rows = await grouped_sums(self.sum_source(), machines, start, end, group)
        return [(g.key, g.start_ns, g.end_ns, summarize(g.sums)) for g in rows]

    # ---------------------------------------------------------- downtime
    async def events(self, machines: Sequence[Machine], start: int, end: int) -> list[StopEvent]:
        """The stops of the machines overlapping ``[start, end)``, by machine then time."""
        out: list[StopEvent] = []
        known = {t.path for t in await self.historian.tags()}
        now = self.clock()
        lo, hi = read_window(self.calendar, self.settings, start, end)
        lo = min(lo, start - _EVENT_LOOKBACK_NS)
        before = await self.values_before(machines, lo, known)
        for m in machines:
            data = await self.series(m, lo, hi, known=known, before=before)
            if not data.state_known:
                continue
            assigned = await self._db_call(partial(_assignments, path=m.path, lo=lo, hi=hi))
            out += await asyncio.to_thread(
                self._stops, m, data, start, end, now=now, assigned=assigned
            )
        return out

    def _stops(
        self,
        m: Machine,
        data: MachineSeries,
        start: int,
        end: int,
        *,
        now: int,
        assigned: dict[int, ReasonAssignment],
    ) -> list[StopEvent]:
        """The stop events of one machine's series (CPU: run it in an executor)."""
        lo = data.read_start
        runs = machine_runs(data, self.settings)
        idx = runs.stops()
        idx = idx[(runs.start[idx] < end) & (runs.end[idx] > start)]
        # before its first state ever the machine was not monitored, not stopped (as in OEE)
        idx = idx[runs.end[idx] > data.first_state_ns]
        planned = self.calendar.planned(lo, data.read_end, equipment=m.id, path=m.path)
        unplanned = planned.measure(runs.start[idx], runs.end[idx])
        in_range = planned.measure(
            np.maximum(runs.start[idx], start), np.minimum(runs.end[idx], end)
        )
        shifts = self.calendar.instances(lo, data.read_end)
        inst = shifts.at(runs.start[idx])
        out: list[StopEvent] = []
        for j, i in enumerate(idx):
            s0, s1 = int(runs.start[i]), int(runs.end[i])
            k = int(inst[j])
            out.append(
                StopEvent(
                    machine=m,
                    start_ns=s0,
                    end_ns=s1,
                    ongoing=s1 == data.read_end and s1 >= now,
                    start_known=s0 > lo,
                    state=int(runs.state[i]),
                    reason=int(runs.reason[i]),
                    loss=LOSS_NAMES[int(runs.cls[i])],
                    micro=bool(runs.micro[i]),
                    unplanned_ns=int(unplanned[j]),
                    unplanned_in_range_ns=int(in_range[j]),
                    shift=self.calendar.names[int(shifts.shift[k])] if k >= 0 else None,
                    assignment=assigned.get(s0) if runs.assigned[i] else None,
                )
            )
        return out

    async def assign_reason(
        self, m: Machine, start_ns: int, reason: int, *, user: str, comment: str
    ) -> StopEvent:
        """Give the stop of ``m`` beginning at ``start_ns`` an operator's reason.

        The hours it spans are forgotten, so the job computes them again with the new
        reason (and queries compute them on demand meanwhile).

        Raises:
            PayloadError: no stop begins then (``start``), or the machine's reason tag
                declares no such code (``reason``).
        """
        if m.reason_labels and reason not in m.reason_labels:
            known = ", ".join(f"{k} ({v})" for k, v in sorted(m.reason_labels.items()))
            raise PayloadError("reason", f"reason: {reason} is not one of {known}")
        found = [
            e for e in await self.events([m], start_ns, start_ns + 1) if e.start_ns == start_ns
        ]
        if not found:
            raise PayloadError("start", "start: no stop of this machine begins at that time")
        now = self.clock()
        # the one place an operator's reason is written (audit: record it here)
        await self._db_call(
            lambda s: s.assign_reason(
                m.path, start_ns, reason, user=user, comment=comment, now_ns=now
            )
        )
        await self._db_call(lambda s: s.invalidate(m.path, start_ns, found[0].end_ns + 1))
        (event,) = [
            e for e in await self.events([m], start_ns, start_ns + 1) if e.start_ns == start_ns
        ]
        return event


def _assignments(
    store: AnalyticsStorage, *, path: str, lo: int, hi: int
) -> dict[int, ReasonAssignment]:
    return store.assignments(path, lo, hi)


def point_columns(t: pa.Table) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A raw read's timestamps (int64 ns), values (float64) and Good mask."""
    ts = np.asarray(t.column("ts").cast(pa.int64()).to_numpy(), dtype=np.int64)
    v = np.asarray(t.column("value").to_numpy(zero_copy_only=False), dtype=np.float64)
    q = np.asarray(t.column("quality").to_numpy(), dtype=np.uint32)
    return ts, v, is_good(q)
