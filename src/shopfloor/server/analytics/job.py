"""The OEE job: computes each machine's closed hours once and stores them.

An hour is closed ``settle`` + ``micro_stop`` after it ends: late points from edges have
had time to arrive, and a stop crossing its end is known to be a micro-stop or not. The
job looks for hours *missing* from the store rather than continuing from a mark, so the
same loop catches up after a restart, fills hours a reason change invalidated, and
backfills up to ``backfill`` on its first start (never before a machine's first point).
Contiguous missing hours are computed up to a week at a time: one read and one vectorized
pass per machine.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from shopfloor.config.analytics import OeeSection
from shopfloor.config.durations import parse_duration_s
from shopfloor.model import now_ns
from shopfloor.server.analytics.machines import STATE, Machine
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

    async def run(self) -> None:
        """Compute missing hours every ``interval`` until cancelled."""
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
