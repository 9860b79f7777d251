"""The demo plant's template alarms fire when the simulator's vibration degrades.

The real simulator (bearing wear injected on one mill) feeds the real alarm engine with
the rules the demo plant's templates declare, batch by batch as live data, and the
journal says what happened: zone C (H) before zone D (HH) on that mill.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import numpy as np

from shopfloor.model import LiveBatch
from shopfloor.server.assets import load_asset_model
from shopfloor.server.rules.alarms import AlarmEvent
from shopfloor.server.rules.engine import AlarmEngine
from shopfloor.simulator import Fault, Plant
from shopfloor.testing.clock import ManualClock

S = 10**9
DEMO = Path(str(resources.files("shopfloor") / "demo_plant"))
MILL = "acme/plant-1/machining/line-1/cell-2/cnc-02"


async def test_bearing_wear_on_one_mill_raises_its_vibration_alarms(tmp_path: Path) -> None:
    model = load_asset_model(DEMO / "plant.toml", DEMO / "templates")
    t0 = 1_750_000_000 * S
    clock = ManualClock(t0)
    engine = AlarmEngine(model.alarm_rules, tmp_path / "alarms.sqlite", clock=clock)
    plant = Plant.default(seed=3)
    plant.advance(start_ns=t0, steps=1)
    plant.inject("cnc-02", Fault.bearing_wear(80.0))
    await engine.start()
    try:
        peak = 0.0
        for _ in range(24):  # a simulated day, an hour a batch
            batch = plant.advance(steps=3600)
            vib = batch.tags.index(f"{MILL}/vibration_rms")
            peak = max(peak, float(np.nanmax(batch.value[batch.tag_index == vib])))
            await engine.process(LiveBatch(batch))
        entries = await engine.journal(limit=10_000)
    finally:
        await engine.close()
    assert peak > 7.1  # the fault drove the mill into zone D
    came = [e for e in entries if e.event is AlarmEvent.ACTIVATED]
    vibration = [e.alarm for e in came if "vibration_rms" in e.alarm]
    assert f"{MILL}/vibration_rms.H" in vibration
    assert f"{MILL}/vibration_rms.HH" in vibration
    limits = {r.name: r.limit for r in model.alarm_rules}
    for e in came:  # natural wear may alarm other machines too: each above its limit
        if "vibration_rms" in e.alarm:
            assert e.value is not None
            assert e.value > (limits[e.alarm] or 0.0), e
    first_h = next(e.ts_ns for e in came if e.alarm == f"{MILL}/vibration_rms.H")
    first_hh = next(e.ts_ns for e in came if e.alarm == f"{MILL}/vibration_rms.HH")
    assert first_h < first_hh
    h = next(e for e in came if e.alarm == f"{MILL}/vibration_rms.H")
    assert h.value is not None
    assert h.value > 4.5
