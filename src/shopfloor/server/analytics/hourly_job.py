"""The loop behind every stored-hours job (OEE, energy): compute each unit's closed hours
once, store them, and compute again the hours that late points change.

An hour is closed ``settle`` + the figures' *reach* after it ends (the reach is how far a
point changes the figures before it: a stop's micro-stop class for OEE, a counter reading
spread back over ``max_gap`` for energy). The job looks for hours *missing* from the store
rather than continuing from a mark, so the same loop catches up after a restart, fills
hours an invalidation (a reason change, late points) forgot, and backfills up to
``backfill`` on its first start, never before a unit's first point.

Points of hours already stored (an edge draining its backlog) are seen on the live
channel: the unit's stored hours from the first such point less the reach are forgotten,
and the loop computes them again. Contiguous missing hours are computed up to a week at a
time: one read and one vectorised pass per unit, units missing the same hours sharing one
read of the values in force before them.

Scaled out (``analytics.partitions``), ``owns`` says which units this server computes,
asked at every step: a unit whose partition moved here is caught up by the same search
for missing hours. Late points are forgotten whoever owns the unit (the owner computes
the forgotten hours again; a server that only saw them answers them on demand).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import Any, Generic, Protocol, TypeVar

import numpy as np

from shopfloor.config.analytics import OeeSection
from shopfloor.config.durations import parse_duration_s
from shopfloor.model import LiveBatch, PointBatch, now_ns
from shopfloor.runtime.channels import Channel
from shopfloor.server.analytics.oee import HOUR_NS
from shopfloor.server.historian.base import Historian

__all__ = ["HourlyJob", "StoredHours"]

logger = logging.getLogger(__name__)

_CHUNK_HOURS = 7 * 24


class _Unit(Protocol):
    @property
    def path(self) -> str: ...


U = TypeVar("U", bound=_Unit)


class StoredHours(Protocol[U]):
    """What a service with figures stored per closed hour gives its job."""

    name: str
    """For task names and log lines: ``oee``, ``energy``."""
    units: Sequence[U]
    """What gets hours: machines, meters."""
    reach_ns: int
    """How far before a point the stored figures can change."""
    historian: Historian

    def tags_of(self, unit: U) -> Sequence[str]:
        """Every tag the unit's figures are computed from (the first is read for its
        first point)."""
        ...

    def read_start(self, start: int, end: int) -> int:
        """Where a computation of the hours ``[start, end)`` starts reading."""
        ...

    async def values_before(self, units: Sequence[U], t: int, known: set[str]) -> Any:
        """The values in force before ``t`` of the units' tags, read once for all."""
        ...

    async def store_hours(
        self, unit: U, start: int, end: int, *, known: set[str], before: Any
    ) -> int:
        """Compute and store the unit's hours ``[start, end)``."""
        ...

    async def stored_hours(self, units: Sequence[U], start: int, end: int) -> dict[str, set[int]]:
        """Per unit path, the hours stored in ``[start, end)``."""
        ...

    async def forget(self, unit: U, since_ns: int) -> None:
        """Forget the unit's stored hours from ``since_ns`` on."""
        ...


class HourlyJob(Generic[U]):
    """Keeps ``hours``' store complete up to the last closed hour.

    Args:
        hours: the service whose hours are stored (started by the caller).
        section: ``[analytics.oee]``: settle, backfill and interval.
        clock: the wall clock in UTC ns.
    """

    def __init__(
        self,
        hours: StoredHours[U],
        section: OeeSection,
        *,
        clock: Callable[[], int] = now_ns,
        owns: Callable[[str], bool] | None = None,
    ) -> None:
        self.hours = hours
        self.clock = clock
        self.owns = owns
        self.settle_ns = round(parse_duration_s(section.settle) * 1e9) + hours.reach_ns
        self.backfill_ns = round(parse_duration_s(section.backfill) * 1e9)
        self.interval_s = parse_duration_s(section.interval)
        self._first: dict[str, int] = {}
        self._failing = False
        self._unit_of = {t: i for i, u in enumerate(hours.units) for t in hours.tags_of(u)}
        self.late_batches = 0
        """Batches that made stored hours be computed again."""

    async def run(self, live: Channel[LiveBatch] | None = None) -> None:
        """Compute missing hours every ``interval``, and follow ``live`` for late points,
        until cancelled."""
        name = self.hours.name
        async with asyncio.TaskGroup() as tasks:
            if live is not None:
                tasks.create_task(self._watch(live), name=f"server/{name}-late")
            tasks.create_task(self._loop(), name=f"server/{name}-hours")

    async def _watch(self, live: Channel[LiveBatch]) -> None:
        async with live.subscribe(f"{self.hours.name}-late") as sub:
            async for item in sub:
                try:
                    await self.late(item.batch)
                except Exception:  # a supervisor loop: the next step is still right
                    logger.exception(
                        "%s job: cannot forget the hours late points change", self.hours.name
                    )

    async def late(self, batch: PointBatch) -> int:
        """Forget stored hours that ``batch``'s points change; how many units."""
        horizon = (self.clock() - self.settle_ns) // HOUR_NS * HOUR_NS
        if not len(batch) or int(batch.ts.min()) >= horizon:
            return 0  # the common case: live points of open hours
        lookup = np.array([self._unit_of.get(t, -1) for t in batch.tags], dtype=np.int64)
        which = lookup[batch.tag_index]
        pick = (which >= 0) & (batch.ts < horizon)
        if not pick.any():
            return 0
        units = self.hours.units
        hit = np.unique(which[pick])
        for i in hit:
            first = int(batch.ts[pick & (which == i)].min())
            await self.hours.forget(units[int(i)], first - self.hours.reach_ns)
        self.late_batches += 1
        return len(hit)

    async def _loop(self) -> None:
        name = self.hours.name
        while True:
            try:
                await self.step()
                if self._failing:
                    logger.info("%s job recovered", name)
                    self._failing = False
            except Exception:  # a supervisor loop: log once, keep the server up
                if not self._failing:
                    logger.exception("%s job failed; retrying every %.0f s", name, self.interval_s)
                self._failing = True
            await asyncio.sleep(self.interval_s)

    async def _first_point(self, unit: U, known: set[str]) -> int | None:
        first = self._first.get(unit.path)
        tag = self.hours.tags_of(unit)[0]
        if first is None and tag in known:
            table = await self.hours.historian.read_raw(tag, 0, 2**62, limit=1)
            if table.num_rows:
                first = int(table.column("ts").cast("int64")[0].as_py())
                self._first[unit.path] = first
        return first

    async def step(self) -> int:
        """Compute and store every missing closed hour; how many hours were stored."""
        now = self.clock()
        closed = (now - self.settle_ns) // HOUR_NS * HOUR_NS
        origin = (now - self.backfill_ns) // HOUR_NS * HOUR_NS
        known = {t.path for t in await self.hours.historian.tags()}
        todo: dict[tuple[int, int], list[U]] = {}
        for unit in self.hours.units:
            if self.owns is not None and not self.owns(unit.path):
                continue  # another server's (scaled out)
            first = await self._first_point(unit, known)
            if first is None:
                continue
            lo = max(origin, first // HOUR_NS * HOUR_NS)
            if lo >= closed:
                continue
            have = (await self.hours.stored_hours([unit], lo, closed))[unit.path]
            missing = [h for h in range(lo, closed, HOUR_NS) if h not in have]
            for chunk in chunks(missing):
                todo.setdefault(chunk, []).append(unit)
        done = 0
        for (a, b), group in sorted(todo.items()):
            # units missing the same hours share one read of the values in force
            before = await self.hours.values_before(group, self.hours.read_start(a, b), known)
            for unit in group:
                await self.hours.store_hours(unit, a, b, known=known, before=before)
                done += (b - a) // HOUR_NS
        return done


def chunks(hours: list[int]) -> list[tuple[int, int]]:
    """Contiguous runs of hours, at most a week each, as ``[start, end)``."""
    out: list[tuple[int, int]] = []
    for h in hours:
        if out and out[-1][1] == h and out[-1][1] - out[-1][0] < _CHUNK_HOURS * HOUR_NS:
            out[-1] = (out[-1][0], h + HOUR_NS)
        else:
            out.append((h, h + HOUR_NS))
    return out
