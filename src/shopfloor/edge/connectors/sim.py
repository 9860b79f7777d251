"""A connector that reads the simulated factory, for the demo and for trials.

It runs on simulated time: the clock starts ``backfill`` in the past and moves ``speed``
times faster than the wall clock until it reaches now, then in real time. Each read
returns every sample due since the last read, as one batch.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from shopfloor.config.connectors.simulator import SimulatorConnectorConfig
from shopfloor.config.durations import parse_duration_s
from shopfloor.edge.connectors.base import PollGroup
from shopfloor.edge.mapping import TagSpec
from shopfloor.model import PointBatch, TagMeta
from shopfloor.runtime.clock import Clock, SystemClock
from shopfloor.simulator import Plant


class SimulatorConnector:
    """Polls a :class:`~shopfloor.simulator.Plant`.

    Args:
        plant: the simulated factory.
        period_s: sample period of every tag in simulated seconds.
        speed: simulated seconds per wall second while behind the wall clock.
        backfill_s: how far in the past simulated time starts.
        max_steps_per_read: cap on samples per tag in one batch, so back-filling moves in
            bounded batches instead of one huge one.
    """

    def __init__(
        self,
        plant: Plant,
        *,
        period_s: float = 1.0,
        speed: float = 1.0,
        backfill_s: float = 0.0,
        max_steps_per_read: int = 600,
        clock: Clock | None = None,
        name: str = "simulator",
    ) -> None:
        self.name = name
        self.kind = "simulator"
        self._poll_period_s = min(period_s, 0.25) if speed <= 1 else 0.1
        self._plant = plant
        self._period_ns = round(period_s * 1e9)
        self._speed = speed
        self._backfill_ns = round(backfill_s * 1e9)
        self._max_steps = max_steps_per_read
        self._clock = clock or SystemClock()
        self._next_ns: int | None = None
        self._sim_origin_ns = 0
        self._mono_origin = 0.0
        self.caught_up = backfill_s <= 0

    @classmethod
    def from_config(cls, config: SimulatorConnectorConfig) -> SimulatorConnector:
        """Build from a ``kind = "simulator"`` connector section."""
        return cls(
            Plant.default(seed=config.seed),
            period_s=config.period_s,
            speed=config.speed,
            backfill_s=parse_duration_s(config.backfill),
            name=config.name,
        )

    def tags(self) -> Sequence[TagMeta]:
        """Every simulated tag."""
        return self._plant.tags()

    def specs(self) -> Sequence[TagSpec]:
        """Simulated values are already in engineering units: no scaling, no deadband."""
        return [TagSpec(path=t.path) for t in self._plant.tags()]

    def groups(self) -> Sequence[PollGroup]:
        """One group: every tag, sampled together."""
        paths = tuple(t.path for t in self._plant.tags())
        return [PollGroup(name="all", period_s=self._poll_period_s, paths=paths)]

    async def connect(self) -> None:
        """Fix the simulated clock's origin on first connect (reconnects keep it)."""
        if self._next_ns is not None:
            return
        now = self._clock.now_ns()
        start = now - self._backfill_ns
        self._next_ns = start - start % self._period_ns
        self._sim_origin_ns = self._next_ns
        self._mono_origin = self._clock.monotonic()

    def sim_now_ns(self) -> int:
        """Current simulated time: ahead of the origin by ``speed``, never past the wall."""
        elapsed = self._clock.monotonic() - self._mono_origin
        return min(self._clock.now_ns(), self._sim_origin_ns + int(elapsed * self._speed * 1e9))

    async def read(self, group: PollGroup) -> PointBatch:
        """Every sample due since the last read (at most ``max_steps_per_read`` per tag)."""
        if self._next_ns is None:
            await self.connect()
        assert self._next_ns is not None
        due = self.sim_now_ns()
        steps = min(self._max_steps, max(0, (due - self._next_ns) // self._period_ns + 1))
        if steps == 0:
            return PointBatch.empty()
        start = self._next_ns
        self._next_ns += steps * self._period_ns
        if not self.caught_up and self._next_ns >= self._clock.now_ns() - self._period_ns:
            self.caught_up = True
        if steps > 10:  # a large back-fill step is CPU work: keep the loop responsive
            return await asyncio.to_thread(self._advance, start, steps)
        return self._advance(start, steps)

    def _advance(self, start_ns: int, steps: int) -> PointBatch:
        return self._plant.advance(start_ns=start_ns, steps=steps, period_ns=self._period_ns)

    async def close(self) -> None:
        """Nothing to release."""
