"""The OEE job: computes each machine's closed hours once and stores them.

An hour is closed ``settle`` + ``micro_stop`` after it ends: late points from edges have
had time to arrive, and a stop crossing its end is known to be a micro-stop or not. The
job looks for hours *missing* from the store rather than continuing from a mark, so the
same loop catches up after a restart, fills hours a reason change invalidated, and
backfills up to ``backfill`` on its first start (never before a machine's first point).

Points that arrive after their hour was stored (an edge draining its backlog) are seen on
the live channel: the machine's stored hours from the first late point on (less
``micro_stop``, the furthest back a new point can change a stop's class) are forgotten,
and the loop computes them again.
Contiguous missing hours are computed up to a week at a time: one read and one vectorized
pass per machine.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import numpy as np

from shopfloor.config.analytics import OeeSection
from shopfloor.config.durations import parse_duration_s
from shopfloor.model import LiveBatch, PointBatch, now_ns
from shopfloor.runtime.channels import Channel
from shopfloor.server.analytics.machines import GOOD, PARTS, REASON, SCRAP, STATE, Machine
from shopfloor.server.analytics.oee import HOUR_NS, read_window
from shopfloor.server.analytics.service import Analytics

__all__ = ["OeeJob"]

logger = logging.getLogger(__name__)

_CHUNK_HOURS = 7 * 24


class OeeJob:
    """Stores OEE hours of every OEE machine of ``analytics``.

    Args:
        analytics: the analytics service (started by the caller).
        section: ``[analytics.oee]``.
        clock: the wall clock in UTC ns.
    """

    def __init__(
        self, analytics: Analytics, section: OeeSection, *, clock: Callable[[], int] = now_ns
    ) -> None:
        self.analytics = analytics
        self.clock = clock
        self.settle_ns = round(parse_duration_s(section.settle) * 1e9)
        self.settle_ns += analytics.settings.micro_stop_ns
        self.backfill_ns = round(parse_duration_s(section.backfill) * 1e9)
        self.interval_s = parse_duration_s(section.interval)
        self._first: dict[str, int] = {}
        self._failing = False
        self._machine_of = {
            m.tag(n): i
            for i, m in enumerate(analytics.machines)
            if m.oee
            for n in (STATE, REASON, PARTS, GOOD, SCRAP)
        }
        self.late_batches = 0
        """Batches that made stored hours be computed again."""

    async def run(self, live: Channel[LiveBatch] | None = None) -> None:
        """Compute missing hours every ``interval``, and follow ``live`` for late points,
        until cancelled."""
        async with asyncio.TaskGroup() as tasks:
            if live is not None:
                tasks.create_task(self._watch(live), name="server/oee-late")
            tasks.create_task(self._loop(), name="server/oee-hours")

    async def _watch(self, live: Channel[LiveBatch]) -> None:
        async with live.subscribe("oee-late") as sub:
            async for item in sub:
                try:
                    await self.late(item.batch)
                except Exception:  # a supervisor loop: the next step is still right
                    logger.exception("OEE job: cannot forget the hours late points change")

    async def late(self, batch: PointBatch) -> int:
        """Forget stored hours that ``batch``'s points change; how many machines."""
        horizon = (self.clock() - self.settle_ns) // HOUR_NS * HOUR_NS
        if not len(batch) or int(batch.ts.min()) >= horizon:
            return 0  # the common case: live points of open hours
        lookup = np.array([self._machine_of.get(t, -1) for t in batch.tags], dtype=np.int64)
        which = lookup[batch.tag_index]
        pick = (which >= 0) & (batch.ts < horizon)
        if not pick.any():
            return 0
        machines = self.analytics.machines
        hit = np.unique(which[pick])
        margin = self.analytics.settings.micro_stop_ns
        for i in hit:
            first = int(batch.ts[pick & (which == i)].min())
            await self.analytics.forget(machines[int(i)], first - margin)
        self.late_batches += 1
        return len(hit)

    async def _loop(self) -> None:
        while True:
            try:
                await self.step()
                if self._failing:
                    logger.info("OEE job recovered")
                    self._failing = False
            except Exception:  # a supervisor loop: log once, keep the server up
                if not self._failing:
                    logger.exception("OEE job failed; retrying every %.0f s", self.interval_s)
                self._failing = True
            await asyncio.sleep(self.interval_s)

    async def _first_point(self, m: Machine, known: set[str]) -> int | None:
        first = self._first.get(m.path)
        if first is None and m.tag(STATE) in known:
            table = await self.analytics.historian.read_raw(m.tag(STATE), 0, 2**62, limit=1)
            if table.num_rows:
                first = int(table.column("ts").cast("int64")[0].as_py())
                self._first[m.path] = first
        return first

    async def step(self) -> int:
        """Compute and store every missing closed hour; how many hours were stored."""
        now = self.clock()
        closed = (now - self.settle_ns) // HOUR_NS * HOUR_NS
        origin = (now - self.backfill_ns) // HOUR_NS * HOUR_NS
        known = {t.path for t in await self.analytics.historian.tags()}
        todo: dict[tuple[int, int], list[Machine]] = {}
        for m in self.analytics.machines:
            if not m.oee:
                continue
            first = await self._first_point(m, known)
            if first is None:
                continue
            lo = max(origin, first // HOUR_NS * HOUR_NS)
            if lo >= closed:
                continue
            have = (await self.analytics.stored_hours([m], lo, closed))[m.path]
            missing = [h for h in range(lo, closed, HOUR_NS) if h not in have]
            for chunk in _chunks(missing):
                todo.setdefault(chunk, []).append(m)
        done = 0
        for (a, b), group in sorted(todo.items()):
            # machines missing the same hours share one read of the values in force
            lo = read_window(self.analytics.calendar, self.analytics.settings, a, b)[0]
            before = await self.analytics.values_before(group, lo, known)
            for m in group:
                await self.analytics.store_hours(m, a, b, known=known, before=before)
                done += (b - a) // HOUR_NS
        return done


def _chunks(hours: list[int]) -> list[tuple[int, int]]:
    """Contiguous runs of hours, at most a week each, as ``[start, end)``."""
    out: list[tuple[int, int]] = []
    for h in hours:
        if out and out[-1][1] == h and out[-1][1] - out[-1][0] < _CHUNK_HOURS * HOUR_NS:
            out[-1] = (out[-1][0], h + HOUR_NS)
        else:
            out.append((h, h + HOUR_NS))
    return out
