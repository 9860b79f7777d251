"""The energy job: each meter's closed hours computed once and stored beside OEE's (the
loop is :class:`~.hourly_job.HourlyJob`'s, with ``[analytics.oee]``'s settle, backfill and
interval; an hour is closed ``settle`` + ``max_gap`` after it ends, when the reading after
it, whose increase is spread back into it, has arrived)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from shopfloor.config.analytics import OeeSection
from shopfloor.model import now_ns
from shopfloor.server.analytics.energy import read_window
from shopfloor.server.analytics.energy_service import EnergyMeter, EnergyService
from shopfloor.server.analytics.hourly_job import HourlyJob

__all__ = ["EnergyHours", "EnergyJob"]


class EnergyHours:
    """The energy service as the hourly job sees it."""

    name = "energy"

    def __init__(self, energy: EnergyService) -> None:
        self.energy = energy
        self.units: Sequence[EnergyMeter] = energy.meters
        self.reach_ns = energy.max_gap_ns  # a reading's increase is spread back this far
        self.historian = energy.analytics.historian

    def tags_of(self, unit: EnergyMeter) -> Sequence[str]:
        return unit.tags  # the energy tag first

    def read_start(self, start: int, end: int) -> int:
        return read_window(start, end, self.energy.max_gap_ns)[0]

    async def values_before(self, units: Sequence[EnergyMeter], t: int, known: set[str]) -> Any:
        return await self.energy.values_before(units, t, known)

    async def store_hours(
        self, unit: EnergyMeter, start: int, end: int, *, known: set[str], before: Any
    ) -> int:
        return await self.energy.store_hours(unit, start, end, known=known, before=before)

    async def stored_hours(
        self, units: Sequence[EnergyMeter], start: int, end: int
    ) -> dict[str, set[int]]:
        return await self.energy.stored_hours(units, start, end)

    async def forget(self, unit: EnergyMeter, since_ns: int) -> None:
        await self.energy.forget(unit, since_ns)


class EnergyJob(HourlyJob[EnergyMeter]):
    """Stores energy hours of every meter of ``energy`` (its analytics started by the
    caller), with ``[analytics.oee]``'s settle, backfill and interval (only the machines
    ``owns`` says, if given)."""

    def __init__(
        self,
        energy: EnergyService,
        section: OeeSection,
        *,
        clock: Callable[[], int] = now_ns,
        owns: Callable[[str], bool] | None = None,
    ) -> None:
        super().__init__(EnergyHours(energy), section, clock=clock, owns=owns)
