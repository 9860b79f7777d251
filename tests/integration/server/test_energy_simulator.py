"""Energy of the demo plant's simulated day through a real DuckDB historian: from the
meter readings and from integrating power, which must agree.

The simulator's ``energy_kwh`` is the trapezoid integral of its ``power_kw`` at its
sample times (10 s here). Step/hold over the same samples differs from the trapezoid by
``Σ (p[i] − p[i+1]) × dt / 2`` = ``(p_first − p_last) × dt / 2``, plus at each end of the
day the part of one sample interval the two rules place differently: at most
``3 × max power × 10 s`` in all, stated per equipment below.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import numpy as np
import pytest

from shopfloor.config.analytics import AnalyticsSection, EnergySection
from shopfloor.server.analytics.energy_service import EnergyService, meters_of
from shopfloor.server.analytics.machines import machines_of
from shopfloor.server.analytics.service import Analytics
from shopfloor.server.assets import load_asset_model
from shopfloor.server.historian.duckdb import DuckDBHistorian
from shopfloor.simulator import Plant

S = 10**9
H = 3600 * S
DAY = 24 * H
STEP = 10 * S
DEMO = Path(str(resources.files("shopfloor") / "demo_plant"))


async def test_meter_and_power_agree_over_a_simulated_day(tmp_path: Path) -> None:
    t0 = 1_750_000_000 * S // DAY * DAY
    end = t0 + DAY
    model = load_asset_model(DEMO / "plant.toml", DEMO / "templates")
    h = DuckDBHistorian(tmp_path / "h.duckdb", compaction_interval_s=None)
    await h.start()
    plant = Plant.default(seed=5)
    batches = [plant.advance(start_ns=t0 - H, steps=360, period_ns=STEP)]
    batches += [plant.advance(steps=360, period_ns=STEP) for _ in range(26)]
    analytics = Analytics(
        h, machines_of(model), AnalyticsSection(), tmp_path, clock=lambda: end + 2 * H
    )
    try:
        await h.register_tags(model.tags)
        for b in batches:
            await h.write(b)
        await h.flush()
        await analytics.start()
        by_meter = EnergyService(analytics, meters_of(model, EnergySection()), EnergySection())
        by_power = EnergyService(
            analytics,
            meters_of(model, EnergySection(counter="no_such_counter")),
            EnergySection(counter="no_such_counter"),
        )
        assert {m.source for m in by_meter.meters} == {"counter"}
        assert {m.source for m in by_power.meters} == {"power"}
        checked = 0
        for a, b in zip(by_meter.meters, by_power.meters, strict=True):
            ((_, _, _, x),) = await by_meter.energy([a], t0, end, "none")
            ((_, _, _, y),) = await by_power.energy([b], t0, end, "none")
            power = np.concatenate(
                [bt.value[bt.tag_index == bt.tags.index(b.energy_tag)] for bt in batches]
            )
            bound = 3 * float(np.abs(power).max()) * 10 / 3600
            assert x["kwh"] > 1.0, a.id  # a real day's energy
            assert abs(x["kwh"] - y["kwh"]) <= bound, (a.id, x["kwh"], y["kwh"], bound)
            assert x["data_s"] == 86_400
            if a.state_tag is not None:
                split = x["producing_kwh"] + x["idle_kwh"] + x["planned_stop_kwh"]
                assert split + x["unknown_kwh"] == pytest.approx(x["kwh"])
                # the default calendar plans the whole day: no planned-stop energy
                assert x["planned_stop_kwh"] == 0.0
                assert x["unknown_kwh"] == pytest.approx(0.0)
            else:
                assert x["producing_kwh"] is None
            checked += 1
        assert checked == len(by_meter.meters) >= 10
        # the plant's sum leaves out the incoming meter, which meters the others
        ids = [m.id for m in by_meter.select(equipment=None, line=None)]
        assert "mtr-main" not in ids
        assert len(ids) == len(by_meter.meters) - 1
    finally:
        await analytics.close()
        await h.close()
