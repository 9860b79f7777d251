"""The live anomaly job: rows assembled the same however the live channel splits them.

Two monitors are fed the same simulated hours, one in one-minute live batches and one in
ten-minute ones; their detectors must end in the same state (same rows learned, same
refresh schedule), and the faults injected must come out as events with their causes.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

import numpy as np
import pytest

from shopfloor.config.anomaly import AnomalySection, RulSection
from shopfloor.model import LiveBatch, PointBatch
from shopfloor.server.analytics.anomaly import settled
from shopfloor.server.analytics.anomaly_monitor import (
    BAD_SCORE,
    AnomalyMonitor,
    anomaly_alarm_rules,
    cause_name,
    cause_tag,
    score_tag,
    watched_machines,
)
from shopfloor.server.analytics.rul import NoEstimate
from shopfloor.server.historian.duckdb import DuckDBHistorian
from shopfloor.simulator import Fault, Plant
from shopfloor.testing.clock import ManualClock

S = 10**9
MINUTE = 60 * S
T0 = 1_704_067_200 * S
SECTION = AnomalySection(
    enabled=True, window=1200, min_points=300, refresh=30, settle="1m", alarm=True
)


@pytest.fixture
async def historian() -> AsyncIterator[DuckDBHistorian]:
    h = DuckDBHistorian(None, flush_interval_s=0.05)
    await h.start()
    yield h
    await h.close()


def _plant() -> Plant:
    plant = Plant.default(seed=2, start_ns=T0)
    plant.inject("cnc-01", Fault.sensor_failure("spindle_temp", at_ns=T0 + 70 * MINUTE))
    plant.inject("cnc-02", Fault.overheat(15.0, at_ns=T0 + 60 * MINUTE))
    return plant


def _monitor(plant: Plant, historian: DuckDBHistorian, sink: list[PointBatch]) -> AnomalyMonitor:
    layout = plant.layout
    machines = [(m.id, layout.equipment_path(m)) for m in layout.machines]
    watched = watched_machines(machines, [t.path for t in plant.tags()], SECTION.tags)

    async def publish(batch: PointBatch) -> None:
        sink.append(batch)

    return AnomalyMonitor(SECTION, RulSection(), watched, historian=historian, publish=publish)


async def test_batching_does_not_change_what_is_learned(historian: DuckDBHistorian) -> None:
    sinks: list[list[PointBatch]] = [[], []]
    monitors = []
    for minutes, sink in zip((1, 10), sinks, strict=True):
        plant = _plant()
        monitor = _monitor(plant, historian, sink)
        for k in range(90 // minutes):
            batch = plant.advance(start_ns=T0 + k * minutes * MINUTE, steps=60 * minutes)
            await monitor.process(LiveBatch(batch))
        monitors.append(monitor)
    one, ten = monitors
    assert [m.path for m in one.machines] == [m.path for m in ten.machines]
    for a, b in zip(one._machines, ten._machines, strict=True):
        np.testing.assert_array_equal(a.detector.robust.median, b.detector.robust.median)
        np.testing.assert_array_equal(a.detector.robust.scale, b.detector.robust.scale)
        np.testing.assert_allclose(a.detector.ewma.state, b.detector.ewma.state, rtol=1e-12)
        assert a.last_ts == b.last_ts
    for monitor in monitors:
        causes = {(e.equipment.rsplit("/", 1)[1], e.cause) for e in monitor.events}
        assert ("cnc-01", "bad spindle_temp") in causes
        assert any(m == "cnc-02" and "spindle_temp" in c for m, c in causes)
        assert not any(m not in {"cnc-01", "cnc-02"} for m, _ in causes), causes
    published = [p for b in sinks[0] for p in b.tags]
    assert score_tag("acme/plant-1/machining/line-1/cell-1/cnc-01") in published
    assert max(float(b.value.max()) for b in sinks[0]) == BAD_SCORE


async def test_backlog_batches_are_not_scored(historian: DuckDBHistorian) -> None:
    plant = _plant()
    sink: list[PointBatch] = []
    monitor = _monitor(plant, historian, sink)
    batch = plant.advance(start_ns=T0, steps=600)
    assert await monitor.process(LiveBatch(batch, historical=True)) == []
    assert sink == []


def test_alarm_rules_per_watched_machine() -> None:
    plant = _plant()
    layout = plant.layout
    machines = [(m.id, layout.equipment_path(m)) for m in layout.machines]
    watched = watched_machines(machines, [t.path for t in plant.tags()], SECTION.tags)
    rules = anomaly_alarm_rules(SECTION, watched)
    assert len(rules) == len(watched) == 7  # mills, presses, compressors
    assert {(r.kind, r.limit) for r in rules} == {("H", 1.0)}
    assert rules[0].name == "anomaly.cnc-01"
    assert rules[0].tag.endswith("cnc-01/anomaly_score")
    assert anomaly_alarm_rules(SECTION.model_copy(update={"alarm": False}), watched) == []


def test_settled_carries_the_running_spell_across_calls() -> None:
    running = np.array([0, 1, 1, 1, 1, 0, 1, 1], dtype=bool)
    t = np.arange(8, dtype=np.int64) * 10
    whole, _ = settled(running, t, None, 20)
    first, carry = settled(running[:3], t[:3], None, 20)
    second, _ = settled(running[3:], t[3:], carry, 20)
    assert whole.tolist() == [False, False, False, True, True, False, False, False]
    assert np.concatenate([first, second]).tolist() == whole.tolist()


async def test_rul_is_tried_again_soon_while_a_machine_has_no_data(
    historian: DuckDBHistorian,
) -> None:
    """A server started before its edges has no vibration tag yet: RUL is tried again
    every 10 s until the data is there, then only every ``interval``."""
    plant = _plant()
    path = plant.layout.equipment_path(plant.layout.machines[0])
    clock = ManualClock(T0 + 3 * 3600 * S)

    async def publish(batch: PointBatch) -> None:
        pass

    monitor = AnomalyMonitor(
        SECTION.model_copy(update={"enabled": False}),
        RulSection(enabled=True, interval="1h"),
        [],
        rul_machines=[("cnc-01", path)],
        historian=historian,
        publish=publish,
        clock=clock,
    )

    async def refreshed_after(seconds: float) -> bool:
        before = monitor.ruls[path].computed_ns
        clock.advance(seconds)
        for _ in range(200):
            await asyncio.sleep(0.01)
            if monitor.ruls[path].computed_ns != before:
                return True
        return False

    task = asyncio.create_task(monitor.run_rul())
    try:
        while path not in monitor.ruls:  # noqa: ASYNC110 - the first refresh runs at once
            await asyncio.sleep(0.01)
        result = monitor.ruls[path].result
        assert isinstance(result, NoEstimate)
        assert result.reason.startswith("no tag"), result
        assert await refreshed_after(10)  # tried again soon
        for k in range(3):  # three simulated hours of the plant arrive
            await historian.write(plant.advance(start_ns=T0 + k * 3600 * S, steps=3600))
        await historian.flush()
        assert await refreshed_after(10)
        result = monitor.ruls[path].result
        assert not (isinstance(result, NoEstimate) and result.reason.startswith("no tag"))
        assert not await refreshed_after(10)  # data there: back to the interval
        assert await refreshed_after(3600)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_servers_score_only_the_machines_they_own_now(historian: DuckDBHistorian) -> None:
    """Scaled out (analytics.partitions): each machine's score is published by one server,
    and a machine whose partition moves is scored by its new owner from then on."""
    first = "acme/plant-1/machining/line-1/cell-1/cnc-01"
    owned_a = {first}
    sinks: list[list[PointBatch]] = [[], [], []]
    plant = _plant()
    layout = plant.layout
    machines = [(m.id, layout.equipment_path(m)) for m in layout.machines]
    watched = watched_machines(machines, [t.path for t in plant.tags()], SECTION.tags)

    def publisher(sink: list[PointBatch]) -> Callable[[PointBatch], Awaitable[None]]:
        async def publish(batch: PointBatch) -> None:
            sink.append(batch)

        return publish

    # a and b split the machines; alone is a server of an unpartitioned installation
    a, b, alone = (
        AnomalyMonitor(
            SECTION, RulSection(), watched, historian=historian, publish=publisher(sink), owns=owns
        )
        for sink, owns in zip(
            sinks, (owned_a.__contains__, lambda p: p not in owned_a, None), strict=True
        )
    )

    def scored(sink: list[PointBatch]) -> set[str]:
        return {tag.rpartition("/")[0] for batch in sink for tag in batch.tags}

    async def play(minutes: range) -> None:
        for sink in sinks:
            sink.clear()
        for k in minutes:
            batch = LiveBatch(plant.advance(start_ns=T0 + k * MINUTE, steps=60))
            for monitor in (a, b, alone):
                await monitor.process(batch)

    await play(range(10))
    everyone = scored(sinks[2])
    assert first in everyone
    assert len(everyone) > 1
    assert scored(sinks[0]) == {first}
    assert scored(sinks[1]) == everyone - {first}
    owned_a.clear()  # a's partition moved to b
    await play(range(10, 20))
    assert sinks[0] == []
    assert scored(sinks[1]) == scored(sinks[2])
    assert first in scored(sinks[1])


async def test_scaled_out_each_score_is_stored_with_its_cause(historian: DuckDBHistorian) -> None:
    """The servers that do not score a machine read the cause from the historian: it must
    name what the scoring server says (every detector), and cost nothing unpartitioned."""
    plant = _plant()
    layout = plant.layout
    machines = [(m.id, layout.equipment_path(m)) for m in layout.machines]
    watched = watched_machines(machines, [t.path for t in plant.tags()], SECTION.tags)
    sinks: list[list[PointBatch]] = [[], []]

    def publisher(sink: list[PointBatch]) -> Callable[[PointBatch], Awaitable[None]]:
        async def publish(batch: PointBatch) -> None:
            sink.append(batch)

        return publish

    scaled, alone = (
        AnomalyMonitor(
            SECTION, RulSection(), watched, historian=historian, publish=publisher(sink), owns=owns
        )
        for sink, owns in zip(sinks, (lambda _: True, None), strict=True)
    )
    for k in range(90):
        batch = LiveBatch(plant.advance(start_ns=T0 + k * MINUTE, steps=60))
        for monitor in (scaled, alone):
            await monitor.process(batch)
    names = {m.path: m.names for m in watched}
    stored: dict[tuple[str, int], float] = {}
    for batch in sinks[0]:
        for i, tag in enumerate(batch.tags):
            mine = batch.tag_index == i
            for t, v in zip(batch.ts[mine].tolist(), batch.value[mine].tolist(), strict=True):
                stored[tag, t] = v
    for path, (ts, _, cause) in scaled.latest.items():
        assert cause_name(stored[cause_tag(path), ts], names[path]) == cause
    events = {
        (e.equipment, e.cause): cause_name(
            stored[cause_tag(e.equipment), e.ts_ns], names[e.equipment]
        )
        for e in scaled.events
    }
    assert all(cause == decoded for (_, cause), decoded in events.items()), events
    assert {c.split()[0] for _, c in events} >= {"bad", "z"}
    assert not any(cause_tag(p) in b.tags for b in sinks[1] for p in names)
