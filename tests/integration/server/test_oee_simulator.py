"""OEE of the demo plant's simulated day, checked against the simulator's own samples.

The simulator (states, reasons and monotonic counters at 10 s) writes a day into a real
DuckDB historian; the analytics' figures are compared with independent numpy sums over
the same samples: run time from counting running samples, parts from the counters' first
and last values, and the time identities of the six big losses.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import numpy as np
import pytest

from shopfloor.config.analytics import AnalyticsSection
from shopfloor.model import PointBatch
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


def column(batches: list[PointBatch], path: str) -> tuple[np.ndarray, np.ndarray]:
    ts, vs = [], []
    for b in batches:
        k = b.tags.index(path)
        pick = b.tag_index == k
        ts.append(b.ts[pick])
        vs.append(b.value[pick])
    return np.concatenate(ts), np.concatenate(vs)


async def test_a_simulated_day_matches_counts_over_the_samples(tmp_path: Path) -> None:
    t0 = 1_750_000_000 * S // DAY * DAY
    end = t0 + DAY
    model = load_asset_model(DEMO / "plant.toml", DEMO / "templates")
    h = DuckDBHistorian(tmp_path / "h.duckdb", compaction_interval_s=None)
    await h.start()
    plant = Plant.default(seed=5)
    first = plant.advance(start_ns=t0 - STEP, steps=1, period_ns=STEP)  # the value before
    batches = [plant.advance(steps=360, period_ns=STEP) for _ in range(24)]
    analytics = Analytics(
        h, machines_of(model), AnalyticsSection(), tmp_path, clock=lambda: end + H
    )
    try:
        await h.register_tags(model.tags)
        for b in [first, *batches]:
            await h.write(b)
        await h.flush()
        await analytics.start()
        oee_machines = [m for m in analytics.machines if m.oee]
        assert [m.id for m in oee_machines] == ["cnc-01", "cnc-02", "cnc-03", "imm-01", "imm-02"]
        for m in oee_machines:
            ((_, _, _, r),) = await analytics.oee([m], t0, end, "none")
            _, state = column(batches, m.tag("state"))
            _, parts = column([first, *batches], m.tag("part_count"))
            _, scrap = column([first, *batches], m.tag("scrap_count"))
            changes = int((np.diff(state) != 0).sum())
            # the default calendar plans the whole day (three shifts, no breaks)
            assert r["planned_s"] == 86_400
            # each state holds from its sample to the next: +-1 sample per change
            assert r["run_s"] == pytest.approx((state == 1).sum() * 10, abs=10 * (changes + 1))
            assert r["total"] == parts[-1] - parts[0]
            assert r["scrap"] == scrap[-1] - scrap[0]
            assert r["performance_capped"] is False
            assert 0.5 < r["oee"] < 1.0
            losses = r["losses"]
            stopped = (
                losses["breakdowns_s"] + losses["setup_adjustments_s"] + losses["small_stops_s"]
            )
            assert stopped == pytest.approx(r["planned_s"] - r["run_s"])
            assert sum(losses.values()) == pytest.approx(
                r["planned_s"] - r["good"] * m.ideal_cycle_s
            )
    finally:
        await analytics.close()
        await h.close()
