"""The OEE job: each OEE machine's closed hours computed once and stored (the loop is
:class:`~.hourly_job.HourlyJob`'s; an hour is closed ``settle`` + ``micro_stop`` after it
ends, when a stop crossing its end is known to be a micro-stop or not)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from shopfloor.config.analytics import OeeSection
from shopfloor.model import now_ns
from shopfloor.server.analytics.hourly_job import HourlyJob
from shopfloor.server.analytics.machines import GOOD, PARTS, REASON, SCRAP, STATE, Machine
from shopfloor.server.analytics.oee import read_window
from shopfloor.server.analytics.service import Analytics

__all__ = ["OeeHours", "OeeJob"]


class OeeHours:
    """The OEE service as the hourly job sees it."""

    name = "oee"

    def __init__(self, analytics: Analytics) -> None:
        self.analytics = analytics
        self.units: Sequence[Machine] = [m for m in analytics.machines if m.oee]
        self.reach_ns = analytics.settings.micro_stop_ns
        self.historian = analytics.historian

    def tags_of(self, unit: Machine) -> Sequence[str]:
        return [unit.tag(n) for n in (STATE, REASON, PARTS, GOOD, SCRAP)]

    def read_start(self, start: int, end: int) -> int:
        return read_window(self.analytics.calendar, self.analytics.settings, start, end)[0]

    async def values_before(self, units: Sequence[Machine], t: int, known: set[str]) -> Any:
        return await self.analytics.values_before(units, t, known)

    async def store_hours(
        self, unit: Machine, start: int, end: int, *, known: set[str], before: Any
    ) -> int:
        return await self.analytics.store_hours(unit, start, end, known=known, before=before)

    async def stored_hours(
        self, units: Sequence[Machine], start: int, end: int
    ) -> dict[str, set[int]]:
        return await self.analytics.stored_hours(units, start, end)

    async def forget(self, unit: Machine, since_ns: int) -> None:
        await self.analytics.forget(unit, since_ns)


class OeeJob(HourlyJob[Machine]):
    """Stores OEE hours of every OEE machine of ``analytics`` (started by the caller),
    with ``[analytics.oee]``'s settle, backfill and interval (only the machines
    ``owns`` says, if given)."""

    def __init__(
        self,
        analytics: Analytics,
        section: OeeSection,
        *,
        clock: Callable[[], int] = now_ns,
        owns: Callable[[str], bool] | None = None,
    ) -> None:
        super().__init__(OeeHours(analytics), section, clock=clock, owns=owns)
