"""Energy through the real server: demo plant assets, a DuckDB historian, the energy job,
and ``GET /api/v1/energy`` answering from raw points and from stored hours alike.

The scenario is the OEE one (one day shift 06:00–14:00 with a 10:00–10:30 break): the
mill draws 12 kW all day, so every minute is 0.2 kWh and the answers are minutes × 0.2:

* total 06:00–14:00: 480 min = 96 kWh;
* idle (not running, planned time): down 07:00–07:30, setup 09:50–10:00 and 10:30–10:40,
  idle 12:00–12:01 = 51 min = 10.2 kWh;
* planned stop (not running, outside planned time): the break inside the setup, 30 min
  = 6 kWh;
* producing: 480 − 81 = 399 min = 79.8 kWh;
* 290 good parts: 96 / 290 kWh per good part.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib import resources
from pathlib import Path
from typing import Any

import httpx
import pytest

from shopfloor.config import ShopfloorConfig
from shopfloor.model import PointBatch, now_ns
from shopfloor.model.timefmt import format_ns
from shopfloor.server.app import Server
from shopfloor.testing.serving import api_client, serving

S = 10**9
M = 60 * S
H = 3600 * S
DAY = 24 * H
DEMO = Path(str(resources.files("shopfloor") / "demo_plant"))
MILL = "acme/plant-1/machining/line-1/cell-1/cnc-01"
T0 = (now_ns() // DAY - 2) * DAY + 6 * H  # 06:00 UTC the day before yesterday


def at(hh: int, mm: int = 0) -> int:
    return T0 + (hh - 6) * H + mm * M


@asynccontextmanager
async def platform(
    data_dir: Path, *, counter: str = "energy_kwh"
) -> AsyncIterator[tuple[Server, httpx.AsyncClient]]:
    config = ShopfloorConfig.model_validate(
        {
            "server": {"port": 0, "data_dir": str(data_dir)},
            "historian": {"flush_interval_s": 0.05},
            "assets": {"plant": str(DEMO / "plant.toml")},
            "analytics": {
                "shifts": {
                    "shifts": [{"name": "day", "start": "06:00", "end": "14:00"}],
                    "breaks": [{"start": "10:00", "end": "10:30"}],
                },
                "oee": {"backfill": "7d", "interval": "1h"},
                "energy": {"counter": counter},
            },
        }
    ).resolve_paths(data_dir)
    async with (
        serving(Server(config)) as server,
        api_client(server) as client,
    ):
        yield server, client


def scenario(*, power: bool) -> PointBatch:
    """States as in the OEE scenario; 12 kW as a meter reading (+1 kWh per 5 min) or as
    power readings every 5 min, from an hour before the shift to 20:00."""
    state = [(6, 0, 1), (7, 0, 4), (7, 30, 1), (9, 50, 3), (10, 40, 1), (12, 0, 2), (12, 1, 1)]
    rows: list[tuple[str, int, Any, int]] = [(f"{MILL}/state", at(h, m), v, 0) for h, m, v in state]
    rows += [(f"{MILL}/state", T0 - H, 1, 0), (f"{MILL}/state", at(20), 1, 0)]
    rows += [(f"{MILL}/good_count", T0 - M, 900, 0), (f"{MILL}/good_count", at(13, 59), 1190, 0)]
    for k in range(12 * 15 + 1):  # every 5 min from 05:00 to 20:00
        t = T0 - H + k * 5 * M
        if power:
            rows.append((f"{MILL}/power_kw", t, 12.0, 0))
        else:
            rows.append((f"{MILL}/energy_kwh", t, 5000.0 + k, 0))
    return PointBatch.from_points(rows)


async def ingest(server: Server, batch: PointBatch) -> None:
    """Ingest points of closed hours, and wait until the energy job has seen them go by
    (so it cannot store hours from half the data)."""
    job = server.energy_job
    assert job is not None
    seen = job.late_batches
    await server.ingest_local(batch)
    await server.historian.flush()
    async with asyncio.timeout(10):
        while job.late_batches == seen:  # noqa: ASYNC110 - the job's counter
            await asyncio.sleep(0.01)


async def energy(client: httpx.AsyncClient, **params: str) -> dict[str, Any]:
    query = {"equipment": "cnc-01", "start": format_ns(T0), "end": format_ns(at(14))}
    r = await client.get("/api/v1/energy", params=query | params)
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


def check_shift(row: dict[str, Any]) -> None:
    assert row["kwh"] == pytest.approx(96.0)
    assert row["idle_kwh"] == pytest.approx(51 * 0.2)
    assert row["planned_stop_kwh"] == pytest.approx(30 * 0.2)
    assert row["producing_kwh"] == pytest.approx(399 * 0.2)
    assert row["unknown_kwh"] == pytest.approx(0.0)
    assert row["good_parts"] == 290
    assert row["kwh_per_good_part"] == pytest.approx(96 / 290)
    assert row["data_s"] == 8 * 3600


async def test_energy_from_the_meter_stored_and_on_demand_agree(tmp_path: Path) -> None:
    async with platform(tmp_path) as (server, client):
        assert server.energy is not None
        assert server.energy_job is not None
        assets = server.assets
        assert assets is not None
        await server.register_tags(assets.tags)
        await ingest(server, scenario(power=False))

        answer = await energy(client)
        assert answer["sources"] == {"cnc-01": "counter"}
        (row,) = answer["rows"]  # computed on demand from raw points
        check_shift(row)

        assert await server.energy_job.step() > 8  # every hour from the first point on
        mill = server.energy.select(equipment="cnc-01", line=None)
        stored = await server.energy.stored_hours(mill, T0, at(14))
        assert len(stored[MILL]) == 8
        (again,) = (await energy(client))["rows"]  # now summed from stored hours
        assert again == pytest.approx(row)
        # a late good-part reading at 12:00: its hours are forgotten from 11:50 (max_gap
        # before it) and computed again by the job, to the same answer
        await ingest(server, PointBatch.from_points([(f"{MILL}/good_count", at(12), 1100, 0)]))
        stored = await server.energy.stored_hours(mill, T0, at(14))
        assert sorted(stored[MILL]) == [at(h) for h in range(6, 11)]
        assert await server.energy_job.step() >= 3
        assert len((await server.energy.stored_hours(mill, T0, at(14)))[MILL]) == 8
        (after,) = (await energy(client))["rows"]
        assert after == pytest.approx(row)
        by_hour = (await energy(client, group="hour"))["rows"]
        assert [r["hour"][11:16] for r in by_hour] == [f"{h:02d}:00" for h in range(6, 14)]
        assert [r["kwh"] for r in by_hour] == pytest.approx([12.0] * 8)
        assert by_hour[4]["planned_stop_kwh"] == pytest.approx(6.0)  # 10:00–11:00
        (shift,) = (await energy(client, group="shift"))["rows"]
        assert shift["shift"] == "day"
        check_shift(shift)
        # a range starting mid-hour: the partial hour is computed, the rest stored
        (part,) = (await energy(client, start=format_ns(at(6, 30))))["rows"]
        assert part["kwh"] == pytest.approx(96.0 - 6.0)

        line = await energy(client, equipment="", line="line-1")
        assert line["equipment"] == ["cnc-01", "cnc-02", "cnc-03", "conv-01"]
        assert line["rows"][0]["kwh"] == pytest.approx(96.0)  # only the mill has data
        plant = await energy(client, equipment="")
        assert "mtr-main" not in plant["equipment"]  # it meters the others
        assert "comp-01" in plant["equipment"]
        meter = (await energy(client, equipment="mtr-main"))["rows"][0]
        assert meter["kwh"] == 0.0
        assert meter["producing_kwh"] is None  # no state: kWh only
        assert meter["good_parts"] is None

        for params, field in (
            ({"equipment": "nope"}, "equipment"),
            ({"end": "-3d"}, "end"),
            ({"start": "-200d", "end": "now", "group": "hour"}, "group"),
            ({"line": "line-1"}, "line"),
        ):
            bad = await client.get("/api/v1/energy", params={"equipment": "cnc-01"} | params)
            if field == "line":
                assert bad.status_code == 422
            assert bad.json()["error"]["field"] == field, params


async def test_energy_from_power_agrees_with_the_meter(tmp_path: Path) -> None:
    # no counter of that name: every machine's energy comes from integrating its power
    async with platform(tmp_path, counter="no_such_counter") as (server, client):
        assets = server.assets
        assert assets is not None
        await server.register_tags(assets.tags)
        await ingest(server, scenario(power=True))
        answer = await energy(client)
        assert answer["sources"] == {"cnc-01": "power"}
        check_shift(answer["rows"][0])
