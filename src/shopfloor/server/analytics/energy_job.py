"""The energy job: computes each meter's closed hours once and stores them beside OEE's.

It works as the OEE job does (:mod:`~.job`): every ``[analytics.oee] interval`` it looks
for closed hours *missing* from the store (so it catches up after a restart, refills
hours invalidated by a reason change or late points, and backfills up to
``[analytics.oee] backfill``), computes contiguous missing hours up to a week at a time,
and follows the live channel for points of hours already stored. An hour is closed
``settle`` + ``max_gap`` after it ends: the reading after it, whose increase is spread
back into it, has then arrived.
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
from shopfloor.server.analytics.energy import read_window
from shopfloor.server.analytics.energy_service import EnergyMeter, EnergyService
from shopfloor.server.analytics.job import _chunks
from shopfloor.server.analytics.oee import HOUR_NS

__all__ = ["EnergyJob"]

logger = logging.getLogger(__name__)


class EnergyJob:
    """Stores energy hours of every meter of ``energy``.

    Args:
        energy: the energy service (its analytics started by the caller).
        section: ``[analytics.oee]`` (settle, backfill and interval are shared).
        clock: the wall clock in UTC ns.
    """

    def __init__(
        self, energy: EnergyService, section: OeeSection, *, clock: Callable[[], int] = now_ns
    ) -> None:
        self.energy = energy
        self.clock = clock
        self.settle_ns = round(parse_duration_s(section.settle) * 1e9) + energy.max_gap_ns
        self.backfill_ns = round(parse_duration_s(section.backfill) * 1e9)
        self.interval_s = parse_duration_s(section.interval)
        self._first: dict[str, int] = {}
        self._failing = False
        self._meter_of = {t: i for i, m in enumerate(energy.meters) for t in m.tags}
        self.late_batches = 0
        """Batches that made stored hours be computed again."""

    async def run(self, live: Channel[LiveBatch] | None = None) -> None:
        """Compute missing hours every ``interval``, and follow ``live`` for late points,
        until cancelled."""
        async with asyncio.TaskGroup() as tasks:
            if live is not None:
                tasks.create_task(self._watch(live), name="server/energy-late")
            tasks.create_task(self._loop(), name="server/energy-hours")

    async def _watch(self, live: Channel[LiveBatch]) -> None:
        async with live.subscribe("energy-late") as sub:
            async for item in sub:
                try:
                    await self.late(item.batch)
                except Exception:  # a supervisor loop: the next step is still right
                    logger.exception("energy job: cannot forget the hours late points change")

    async def late(self, batch: PointBatch) -> int:
        """Forget stored hours that ``batch``'s points change; how many meters."""
        horizon = (self.clock() - self.settle_ns) // HOUR_NS * HOUR_NS
        if not len(batch) or int(batch.ts.min()) >= horizon:
            return 0
        lookup = np.array([self._meter_of.get(t, -1) for t in batch.tags], dtype=np.int64)
        which = lookup[batch.tag_index]
        pick = (which >= 0) & (batch.ts < horizon)
        if not pick.any():
            return 0
        meters = self.energy.meters
        hit = np.unique(which[pick])
        for i in hit:
            first = int(batch.ts[pick & (which == i)].min())
            # a reading's increase is spread back up to max_gap before it
            await self.energy.forget(meters[int(i)], first - self.energy.max_gap_ns)
        self.late_batches += 1
        return len(hit)

    async def _loop(self) -> None:
        while True:
            try:
                await self.step()
                if self._failing:
                    logger.info("energy job recovered")
                    self._failing = False
            except Exception:  # a supervisor loop: log once, keep the server up
                if not self._failing:
                    logger.exception("energy job failed; retrying every %.0f s", self.interval_s)
                self._failing = True
            await asyncio.sleep(self.interval_s)

    async def _first_point(self, m: EnergyMeter, known: set[str]) -> int | None:
        first = self._first.get(m.path)
        if first is None and m.energy_tag in known:
            historian = self.energy.analytics.historian
            table = await historian.read_raw(m.energy_tag, 0, 2**62, limit=1)
            if table.num_rows:
                first = int(table.column("ts").cast("int64")[0].as_py())
                self._first[m.path] = first
        return first

    async def step(self) -> int:
        """Compute and store every missing closed hour; how many hours were stored."""
        now = self.clock()
        closed = (now - self.settle_ns) // HOUR_NS * HOUR_NS
        origin = (now - self.backfill_ns) // HOUR_NS * HOUR_NS
        known = {t.path for t in await self.energy.analytics.historian.tags()}
        todo: dict[tuple[int, int], list[EnergyMeter]] = {}
        for m in self.energy.meters:
            first = await self._first_point(m, known)
            if first is None:
                continue
            lo = max(origin, first // HOUR_NS * HOUR_NS)
            if lo >= closed:
                continue
            have = (await self.energy.stored_hours([m], lo, closed))[m.path]
            missing = [h for h in range(lo, closed, HOUR_NS) if h not in have]
            for chunk in _chunks(missing):
                todo.setdefault(chunk, []).append(m)
        done = 0
        for (a, b), group in sorted(todo.items()):
            # meters missing the same hours share one read of the values in force
            lo = read_window(a, b, self.energy.max_gap_ns)[0]
            before = await self.energy.values_before(group, lo, known)
            for m in group:
                await self.energy.store_hours(m, a, b, known=known, before=before)
                done += (b - a) // HOUR_NS
        return done
