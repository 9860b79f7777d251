"""OEE and downtime through the real server: demo plant assets, a DuckDB historian, the
OEE job, the HTTP API, and an operator's reason surviving a restart."""

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
DEMO = Path(str(resources.files("shopfloor") / "demo_plant"))
MILL = "acme/plant-1/machining/line-1/cell-1/cnc-01"
DAY = 24 * H
T0 = (now_ns() // DAY - 2) * DAY + 6 * H  # 06:00 UTC the day before yesterday


def at(hh: int, mm: int = 0) -> int:
    return T0 + (hh - 6) * H + mm * M


@asynccontextmanager
async def platform(
    data_dir: Path, *, interval: str = "1h"
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
                "oee": {"backfill": "7d", "interval": interval},
            },
        }
    ).resolve_paths(data_dir)
    async with (
        serving(Server(config)) as server,
        api_client(server, user="ana") as client,
    ):
        yield server, client


def scenario() -> PointBatch:
    """The worked shift of the unit scenario: a 30 min breakdown, a setup across the
    break, a micro-stop; 300 parts (75 s ideal: cnc-01's template), 290 good, 10 scrap."""
    state = [(6, 0, 1), (7, 0, 4), (7, 30, 1), (9, 50, 3), (10, 40, 1), (12, 0, 2), (12, 1, 1)]
    reason = [(6, 0, 0), (7, 0, 4), (7, 30, 0), (9, 50, 7), (10, 40, 0), (12, 0, 3), (12, 1, 0)]
    rows: list[tuple[str, int, Any, int]] = []
    rows += [(f"{MILL}/state", at(h, m), v, 0) for h, m, v in state]
    rows += [(f"{MILL}/down_reason", at(h, m), v, 0) for h, m, v in reason]
    rows += [(f"{MILL}/state", T0 - H, 1, 0), (f"{MILL}/down_reason", T0 - H, 0, 0)]
    for name, before, after in (
        ("part_count", 1000, 1300),
        ("good_count", 900, 1190),
        ("scrap_count", 100, 110),
    ):
        rows += [(f"{MILL}/{name}", T0 - M, before, 0), (f"{MILL}/{name}", at(13, 59), after, 0)]
    rows.append((f"{MILL}/part_count", at(8), 1100, 0))
    # the mill stays running after the shift, so later hours are known
    rows += [(f"{MILL}/state", at(20), 1, 0)]
    return PointBatch.from_points(rows)


async def ingest_late(server: Server, batch: PointBatch) -> None:
    """Ingest points of closed hours, and wait until the job has seen them go by."""
    job = server.oee_job
    assert job is not None
    seen = job.late_batches
    await server.ingest_local(batch)
    await server.historian.flush()
    async with asyncio.timeout(10):
        while job.late_batches == seen:  # noqa: ASYNC110 - the job's counter
            await asyncio.sleep(0.01)


async def oee(client: httpx.AsyncClient, **params: str) -> dict[str, Any]:
    query = {"equipment": "cnc-01", "start": format_ns(T0), "end": format_ns(at(14))}
    r = await client.get("/api/v1/oee", params=query | params)
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


async def downtime_and_pareto(client: httpx.AsyncClient) -> list[dict[str, Any]]:
    events = (
        await client.get(
            "/api/v1/downtime",
            params={
                "equipment": "cnc-01",
                "start": format_ns(T0),
                "end": format_ns(at(14)),
            },
        )
    ).json()["events"]
    assert [(e["start"][11:16], e["loss"], e["micro_stop"]) for e in events] == [
        ("07:00", "failure", False),
        ("09:50", "setup", False),
        ("12:00", "minor", True),
    ]
    assert events[1]["planned_stop_s"] == 30 * 60  # the break inside the setup
    assert events[1]["unplanned_s"] == 20 * 60
    pareto = (
        await client.get(
            "/api/v1/downtime/pareto",
            params={"by": "reason", "start": format_ns(T0), "end": format_ns(at(14))},
        )
    ).json()["rows"]
    assert [(r["label"], r["downtime_s"], r["micro_stops"]) for r in pareto] == [
        ("electrical fault", 1800.0, 0),
        ("changeover", 1200.0, 0),
        ("jam", 0.0, 1),
    ]
    assert pareto[1]["cumulative_share"] == 1.0

    return list(events)


async def errors_name_their_field(client: httpx.AsyncClient, stop_ns: int) -> None:
    bad = await client.put(
        f"/api/v1/downtime/cnc-01/{stop_ns + 1}",
        json={"reason": 7, "user": "ana"},
    )
    assert bad.status_code == 422
    assert bad.json()["error"]["field"] == "start"
    bad = await client.put(f"/api/v1/downtime/cnc-01/{stop_ns}", json={"reason": 99, "user": "ana"})
    assert bad.json()["error"]["field"] == "reason"
    # both refusals are in the audit log, with their target once the route knew it
    audited = (await client.get("/api/v1/audit", params={"action": "downtime.reason"})).json()
    assert [(e["user"], e["outcome"]) for e in audited[-2:]] == [
        ("ana", "rejected"),
        ("ana", "rejected"),
    ]
    assert audited[-1]["target"].endswith(f"cnc-01@{stop_ns}")
    bad = await client.get("/api/v1/oee", params={"equipment": "nope"})
    assert bad.json()["error"]["field"] == "equipment"
    bad = await client.get("/api/v1/oee", params={"equipment": "cnc-01", "end": "-2d"})
    assert bad.json()["error"]["field"] == "end"


async def test_oee_stored_and_on_demand_agree_and_reasons_survive_a_restart(
    tmp_path: Path,
) -> None:
    async with platform(tmp_path) as (server, client):
        assert server.analytics is not None
        assert server.oee_job is not None
        assets = server.assets
        assert assets is not None
        await server.register_tags(assets.tags)
        await ingest_late(server, scenario())

        mill = server.analytics.machine("cnc-01")
        assert await server.analytics.stored_hours([mill], T0, T0 + 8 * H) == {mill.path: set()}
        (row,) = (await oee(client))["rows"]  # computed on demand from raw points
        assert row["planned_s"] == 450 * 60  # 8 h - 30 min break
        assert row["run_s"] == 399 * 60  # - 30 breakdown - 20 setup (planned part) - 1 micro
        # A = 399/450, P = 300 x 75 s / 399 min = 375/399, Q = 290/300
        assert row["performance"] == pytest.approx(375 / 399)
        assert row["oee"] == pytest.approx(399 / 450 * 375 / 399 * 290 / 300)
        assert row["losses"]["breakdowns_s"] == 30 * 60

        assert await server.oee_job.step() > 8  # every hour from the first point on
        stored = await server.analytics.stored_hours([mill], T0, T0 + 8 * H)
        assert len(stored[mill.path]) == 8
        (again,) = (await oee(client))["rows"]  # now summed from stored hours
        assert again == row
        by_hour = (await oee(client, group="hour"))["rows"]
        assert [r["hour"][11:16] for r in by_hour] == [f"{h:02d}:00" for h in range(6, 14)]
        assert sum(r["planned_s"] for r in by_hour) == 450 * 60
        (shift,) = (await oee(client, group="shift"))["rows"]
        assert shift["shift"] == "day"
        assert shift["run_s"] == 399 * 60
        line = await oee(client, equipment="", line="line-1")
        assert line["equipment"] == ["cnc-01", "cnc-02", "cnc-03"]  # no conveyor: no parts

        events = await downtime_and_pareto(client)

        # the breakdown was in truth a changeover: a setup loss
        r = await client.put(
            f"/api/v1/downtime/cnc-01/{events[0]['start_ns']}",
            json={"reason": 7, "user": "ana", "comment": "tool change overran"},
        )
        assert r.status_code == 200, r.text
        assert r.json()["loss"] == "setup"
        assert r.json()["assigned"]["user"] == "ana"
        (changed,) = (await oee(client))["rows"]
        assert changed["losses"]["breakdowns_s"] == 0
        assert changed["losses"]["setup_adjustments_s"] == 50 * 60
        assert await server.oee_job.step() == 1  # the hour it spans, computed again
        assert (await oee(client))["rows"] == [changed]

        await errors_name_their_field(client, events[0]["start_ns"])

    async with platform(tmp_path) as (server, client):  # a restart keeps the reason
        (after,) = (await oee(client))["rows"]
        assert after == changed
        events = (
            await client.get(
                "/api/v1/downtime",
                params={
                    "equipment": "cnc-01",
                    "start": format_ns(T0),
                    "end": format_ns(at(8)),
                },
            )
        ).json()["events"]
        assert events[0]["reason"] == 7
        assert events[0]["assigned"]["comment"] == "tool change overran"


async def test_the_server_owned_job_stores_hours_and_catches_up_after_a_restart(
    tmp_path: Path,
) -> None:
    async def stored_shift(server: Server) -> set[int]:
        assert server.analytics is not None
        mill = server.analytics.machine("cnc-01")
        return (await server.analytics.stored_hours([mill], T0, at(14)))[mill.path]

    async def wait_for_shift(server: Server) -> None:
        async with asyncio.timeout(30):
            while len(await stored_shift(server)) < 8:  # noqa: ASYNC110 - polling the job's file
                await asyncio.sleep(0.1)

    async with platform(tmp_path) as (server, _):  # its job looks again only in an hour
        assets = server.assets
        assert assets is not None
        await server.register_tags(assets.tags)
        await ingest_late(server, scenario())
        assert server.oee_job is not None
        await server.oee_job.step()
        assert len(await stored_shift(server)) == 8
        assert server.analytics is not None
        path = server.analytics.machine("cnc-01").path
        # as if the server had stopped before computing 09:00-12:00
        await server.analytics._db_call(lambda s: s.invalidate(path, at(9), at(12)))
        assert len(await stored_shift(server)) == 5
        assert {t.get_name() for t in asyncio.all_tasks()} >= {"server/oee"}
    async with platform(tmp_path, interval="1s") as (server, client):
        await wait_for_shift(server)  # the job task caught up by itself after the restart
        (row,) = (await oee(client))["rows"]
        assert row["run_s"] == 399 * 60
    assert "server/oee" not in {t.get_name() for t in asyncio.all_tasks()}


async def test_late_points_make_their_stored_hours_be_computed_again(tmp_path: Path) -> None:
    async with platform(tmp_path) as (server, client):
        assets = server.assets
        assert assets is not None
        assert server.oee_job is not None
        assert server.analytics is not None
        await server.register_tags(assets.tags)
        await ingest_late(server, scenario())
        await server.oee_job.step()
        (before,) = (await oee(client))["rows"]
        # an edge delivers its backlog: the mill was down 12:30-12:35 (a jam)
        state, reason = f"{MILL}/state", f"{MILL}/down_reason"
        late = [(state, at(12, 30), 4, 0), (state, at(12, 35), 1, 0)]
        late += [(reason, at(12, 30), 3, 0), (reason, at(12, 35), 0, 0)]
        await ingest_late(server, PointBatch.from_points(late))
        mill = server.analytics.machine("cnc-01")
        stored = (await server.analytics.stored_hours([mill], T0, at(14)))[mill.path]
        assert sorted((h - T0) // H + 6 for h in stored) == [6, 7, 8, 9, 10, 11]  # from 12:28
        assert await server.oee_job.step() > 2
        (after,) = (await oee(client))["rows"]
        assert after["run_s"] == before["run_s"] - 5 * 60
        assert after["losses"]["small_stops_s"] == before["losses"]["small_stops_s"] + 5 * 60


async def test_time_before_a_machines_first_state_is_no_stop(tmp_path: Path) -> None:
    """A machine monitored from 08:00 on was not stopped before: OEE leaves that time out
    of planned time, and the stop list and Pareto leave it out too (they once showed it as
    an unplanned stop without reason)."""
    mill_2 = MILL.replace("cell-1/cnc-01", "cell-2/cnc-02")
    async with platform(tmp_path) as (server, client):
        assets = server.assets
        assert assets is not None
        await server.register_tags(assets.tags)
        rows: list[tuple[str, int, Any, int]] = [
            (f"{mill_2}/state", at(8), 1, 0),
            (f"{mill_2}/down_reason", at(8), 0, 0),
            (f"{mill_2}/state", at(9), 4, 0),
            (f"{mill_2}/down_reason", at(9), 4, 0),
            (f"{mill_2}/state", at(9, 30), 1, 0),
            (f"{mill_2}/down_reason", at(9, 30), 0, 0),
            (f"{mill_2}/state", at(20), 1, 0),
        ]
        await server.ingest_local(PointBatch.from_points(rows))
        await server.historian.flush()
        window = {"start": format_ns(T0), "end": format_ns(at(14))}
        events = (
            await client.get("/api/v1/downtime", params={"equipment": "cnc-02", **window})
        ).json()["events"]
        assert [(e["start"][11:16], e["end"][11:16], e["loss"]) for e in events] == [
            ("09:00", "09:30", "failure")
        ]
        pareto = (
            await client.get(
                "/api/v1/downtime/pareto", params={"by": "equipment", "line": "line-1", **window}
            )
        ).json()["rows"]
        assert [(r["label"], r["downtime_s"]) for r in pareto if "cnc-02" in r["label"]] == [
            (mill_2, 1800.0)
        ]
