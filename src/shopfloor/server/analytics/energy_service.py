"""Energy over any range and grouping, for a machine, a line or the plant.

Built on :class:`~.service.Analytics` (its historian, shift calendar, clock and analytics
file): energy hours are stored beside OEE hours, and a range is answered from stored
hours where they exist and computed on demand for the rest, with the same function, so
the answer does not depend on which hours happened to be stored.

Which equipment has energy: every piece of equipment with an energy counter (preferred)
or a power tag, named by ``[analytics.energy]``. Equipment with a ``state`` tag (machines,
conveyors, compressors) gets the split into producing, idle and planned-stop energy;
equipment without one (an incoming meter) gets kWh only. A meter without a state
measures other equipment's energy, so the plant total (no ``equipment`` or ``line``)
leaves meters out, else the plant would be counted twice; a meter is asked for by name
or line, and set beside the plant total it shows the unmetered loads.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from shopfloor.config.analytics import EnergySection
from shopfloor.errors import PayloadError
from shopfloor.server.analytics.downtime import Steps
from shopfloor.server.analytics.energy import (
    COUNTER,
    ENERGY_COMPONENTS,
    POWER,
    EnergySeries,
    EnergySlices,
    compute_energy,
    counter_pieces,
    good_increments,
    power_pieces,
    read_window,
    summarize_energy,
)
from shopfloor.server.analytics.grouped import grouped_sums
from shopfloor.server.analytics.machines import GOOD, PARTS, SCRAP, STATE
from shopfloor.server.analytics.oee import Counter
from shopfloor.server.analytics.service import Analytics, point_columns
from shopfloor.server.assets import AssetModel

__all__ = ["EnergyMeter", "EnergyService", "meters_of"]


@dataclass(frozen=True, slots=True)
class EnergyMeter:
    """One piece of equipment with energy.

    Attributes:
        path: the equipment's path.
        id: its id.
        line: its line.
        source: ``counter`` or ``power``.
        energy_tag: the path of the tag the energy comes from.
        state_tag: the path of its state tag, if any.
        part_tags: the paths of its part, good and scrap counters (None where missing).
    """

    path: str
    id: str
    line: str
    source: str
    energy_tag: str
    state_tag: str | None
    part_tags: tuple[str | None, str | None, str | None]

    @property
    def has_parts(self) -> bool:
        """Whether it counts parts (energy per good part)."""
        return any(self.part_tags)

    @property
    def tags(self) -> list[str]:
        """Every tag its energy figures are computed from."""
        return [t for t in (self.energy_tag, self.state_tag, *self.part_tags) if t is not None]


def meters_of(model: AssetModel, section: EnergySection) -> list[EnergyMeter]:
    """The equipment with an energy counter or a power tag, in the plant file's order."""
    tags = {t.path for t in model.tags}
    out: list[EnergyMeter] = []
    for eq in model.equipment:
        counter, power = f"{eq.path}/{section.counter}", f"{eq.path}/{section.power}"
        if counter in tags:
            source, tag = COUNTER, counter
        elif power in tags:
            source, tag = POWER, power
        else:
            continue
        state = f"{eq.path}/{STATE}"
        parts = tuple(
            p if p in tags else None for p in (f"{eq.path}/{n}" for n in (PARTS, GOOD, SCRAP))
        )
        out.append(
            EnergyMeter(
                path=eq.path,
                id=eq.id,
                line=eq.line,
                source=source,
                energy_tag=tag,
                state_tag=state if state in tags else None,
                part_tags=(parts[0], parts[1], parts[2]),
            )
        )
    return out


class EnergyService:
    """Energy of ``meters``, stored and summed through ``analytics``.

    Args:
        analytics: the analytics service (started by the caller).
        meters: the equipment with energy.
        section: ``[analytics.energy]``.
    """

    def __init__(
        self, analytics: Analytics, meters: Sequence[EnergyMeter], section: EnergySection
    ) -> None:
        self.analytics = analytics
        self.meters = list(meters)
        self.section = section
        self.max_gap_ns = section.max_gap_ns
        self._by_name = {m.path: m for m in meters} | {m.id: m for m in meters}

    async def start(self) -> None:
        """Forget stored energy hours computed with other settings."""
        fingerprint = self.fingerprint()
        await self.analytics.store_call(lambda s: s.settings_changed(fingerprint, kind="energy"))

    def fingerprint(self) -> str:
        """A digest of everything stored energy hours depend on besides the points."""
        text = json.dumps(
            {
                "shifts": self.analytics.section.shifts.model_dump(mode="json"),
                "running": self.analytics.settings.running_state,
                "energy": self.section.model_dump(mode="json"),
                "meters": {m.path: m.tags for m in self.meters},
            },
            sort_keys=True,
        )
        return hashlib.sha256(text.encode()).hexdigest()

    # ------------------------------------------------------------ selection
    def select(self, *, equipment: str | None, line: str | None) -> list[EnergyMeter]:
        """The equipment named by ``equipment`` or ``line``; without either, every one
        with a state tag (meters without one would count the plant twice).

        Raises:
            PayloadError: both given, or neither names equipment with energy.
        """
        if equipment is not None and line is not None:
            raise PayloadError("line", "line: give equipment or line, not both")
        if equipment is not None:
            found = self._by_name.get(equipment.strip("/"))
            if found is None:
                raise PayloadError(
                    "equipment",
                    f"equipment: no equipment {equipment!r:.80} with an energy counter "
                    f"({self.section.counter}) or power ({self.section.power}) tag",
                )
            return [found]
        if line is not None:
            chosen = [m for m in self.meters if line in (m.line, m.path.rsplit("/", 2)[0])]
            if not chosen:
                raise PayloadError("line", f"line: no equipment with energy on {line!r:.80}")
            return chosen
        return [m for m in self.meters if m.state_tag is not None]

    # -------------------------------------------------------------- reading
    async def values_before(
        self, meters: Sequence[EnergyMeter], t: int, known: set[str]
    ) -> dict[str, float]:
        """The value of every tag of the meters in force at ``t - 1``, in one ``read_at``."""
        return await self.analytics.values_in_force(
            [p for m in meters for p in m.tags if p in known], t
        )

    async def series(
        self, m: EnergyMeter, lo: int, hi: int, *, known: set[str], before: dict[str, float]
    ) -> EnergySeries:
        """The meter's energy, state and good parts over ``[lo, hi)`` (``hi`` ≤ now)."""
        hi = max(lo, min(hi, self.analytics.clock()))
        read = self.analytics.read_all
        tables = {p: await read(p, lo, hi) if p in known else None for p in m.tags}

        def cols(p: str | None) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
            t = tables.get(p) if p is not None else None
            if t is None:
                return None
            return point_columns(t)

        def counter(p: str | None) -> Counter | None:
            c = cols(p)
            if c is None or p is None:
                return None
            ts, v, good = c
            keep = good & ~np.isnan(v)
            return Counter(ts[keep], v[keep], before.get(p))

        if m.source == COUNTER:
            ctr = counter(m.energy_tag) or Counter(np.empty(0, np.int64), np.empty(0), None)
            pieces = counter_pieces(
                ctr, read_start=lo, max_gap_ns=self.max_gap_ns, rollover=self.section.rollover
            )
        else:
            c = cols(m.energy_tag)
            ts, v, good = c if c is not None else (np.empty(0, np.int64), np.empty(0), None)
            if good is not None:
                v = np.where(good, v, np.nan)  # a Bad reading ends the hold
            pieces = power_pieces(ts, v, read_end=hi, max_gap_ns=self.max_gap_ns)
        state: Steps | None = None
        sc = cols(m.state_tag)
        if sc is not None and m.state_tag is not None:
            ts, v, good = sc
            state = Steps.of(lo, before.get(m.state_tag), ts, np.where(good, v, np.nan))
        g_ts, g_inc = good_increments(*(counter(p) for p in m.part_tags))
        return EnergySeries(
            path=m.path,
            equipment=m.id,
            source=m.source,
            pieces=pieces,
            state=state,
            running_state=self.analytics.settings.running_state,
            good_ts=g_ts,
            good_inc=g_inc,
            read_start=lo,
            read_end=hi,
        )

    async def slices(
        self,
        m: EnergyMeter,
        start: int,
        end: int,
        *,
        known: set[str] | None = None,
        before: dict[str, float] | None = None,
    ) -> EnergySlices:
        """The meter's energy slices of ``[start, end)``, computed now from raw points
        (``before``: :meth:`values_before` at the start of :func:`~.energy.read_window`)."""
        lo, hi = read_window(start, end, self.max_gap_ns)
        if known is None:
            known = {t.path for t in await self.analytics.historian.tags()}
        if before is None:
            before = await self.values_before([m], lo, known)
        data = await self.series(m, lo, hi, known=known, before=before)
        end = min(end, self.analytics.clock())
        if end <= start:
            return EnergySlices.empty()
        return await asyncio.to_thread(compute_energy, data, self.analytics.calendar, start, end)

    # --------------------------------------------------------------- stored
    async def store_hours(
        self,
        m: EnergyMeter,
        start: int,
        end: int,
        *,
        known: set[str] | None = None,
        before: dict[str, float] | None = None,
    ) -> int:
        """Compute and store the whole hours of ``[start, end)``; how many slices (none if
        the meter's hours were forgotten meanwhile)."""
        epoch = await self.analytics.store_call(lambda s: s.epoch(m.path))
        sl = await self.slices(m, start, end, known=known, before=before)
        return await self.analytics.put_slices(m.path, sl, kind="energy", epoch=epoch)

    async def stored_hours(
        self, meters: Sequence[EnergyMeter], start: int, end: int
    ) -> dict[str, set[int]]:
        """Per meter path, the energy hours stored in ``[start, end)``."""
        paths = [m.path for m in meters]
        return await self.analytics.store_call(
            lambda s: s.stored_hours(paths, start, end, kind="energy")
        )

    async def forget(self, m: EnergyMeter, since_ns: int) -> None:
        """Forget the meter's stored hours from ``since_ns`` on: they are computed again."""
        await self.analytics.store_call(lambda s: s.invalidate(m.path, since_ns, 2**62))

    # ---------------------------------------------------------------- query
    async def energy(
        self, meters: Sequence[EnergyMeter], start: int, end: int, group: str
    ) -> list[tuple[tuple[object, ...], int, int, dict[str, Any]]]:
        """Energy of the meters together over ``[start, end)``, per group, oldest first.

        Returns:
            (group key, first slice start, last slice end, :func:`~.energy.summarize_energy`
            output).
        """
        base = self.analytics.sum_source()
        source = replace(
            base,
            kind="energy",
            components=ENERGY_COMPONENTS,
            read_start=lambda lo, hi: read_window(lo, hi, self.max_gap_ns)[0],
            values_before=self.values_before,
            slices=self.slices,
        )
        end = min(end, self.analytics.clock())
        ordered = await grouped_sums(source, meters, start, end, group)
        has_state = any(m.state_tag is not None for m in meters)
        has_parts = any(m.has_parts for m in meters)
        return [
            (
                g.key,
                g.start_ns,
                g.end_ns,
                summarize_energy(g.sums, has_state=has_state, has_parts=has_parts),
            )
            for g in ordered
        ]
