"""Two API servers on one shared PostgreSQL historian (``historian.shared = true``) share
their analytics: an operator's reason assigned through one is in the other's stop list,
Pareto and OEE, and hours stored by one are not computed again by the other.

Both servers run in this process for speed (tests/system/test_scale_out.py runs servers
as processes); each has its own data folder, so nothing is shared but the database.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx

from shopfloor.config import ShopfloorConfig
from shopfloor.model.timefmt import format_ns
from shopfloor.server.app import Server
from shopfloor.testing.auth import grant, shared_secret_key

from .test_oee_api import DEMO, T0, H, at, ingest_late, scenario


@asynccontextmanager
async def api_server(data_dir: Path, dsn: str) -> AsyncIterator[tuple[Server, httpx.AsyncClient]]:
    config = ShopfloorConfig.model_validate(
        {
            "server": {"port": 0, "data_dir": str(data_dir)},
            "historian": {"kind": "postgres", "dsn": dsn, "shared": True, "flush_interval_s": 0.05},
            "security": {"secret_key_file": str(shared_secret_key(data_dir.parent))},
            "assets": {"plant": str(DEMO / "plant.toml")},
            "analytics": {
                "shifts": {
                    "shifts": [{"name": "day", "start": "06:00", "end": "14:00"}],
                    "breaks": [{"start": "10:00", "end": "10:30"}],
                },
                "oee": {"backfill": "7d", "interval": "1h"},  # stepped by the test
            },
        }
    ).resolve_paths(data_dir)
    server = Server(config)
    await server.start()
    stop, ready = asyncio.Event(), asyncio.Event()
    serving = asyncio.create_task(server.serve(stop, ready=ready))
    await asyncio.wait_for(ready.wait(), 10)
    try:
        async with httpx.AsyncClient(
            base_url=server.url, timeout=30, headers=grant(server.app, user="ana")
        ) as client:
            yield server, client
    finally:
        stop.set()
        await serving
        await server.close()


WINDOW = {"start": format_ns(T0), "end": format_ns(at(14))}


async def get(client: httpx.AsyncClient, url: str, **params: str) -> Any:
    r = await client.get(url, params=WINDOW | params)
    assert r.status_code == 200, r.text
    return r.json()


async def stored(server: Server) -> set[int]:
    assert server.analytics is not None
    mill = server.analytics.machine("cnc-01")
    return (await server.analytics.stored_hours([mill], T0, at(14)))[mill.path]


async def test_a_reason_assigned_through_one_server_is_seen_by_the_other(
    tmp_path: Path, dsn: str
) -> None:
    async with (
        api_server(tmp_path / "a", dsn) as (a, client_a),
        api_server(tmp_path / "b", dsn) as (b, client_b),
    ):
        assert a.assets is not None
        assert a.oee_job is not None
        assert b.oee_job is not None
        await a.register_tags(a.assets.tags)
        await b.register_tags(a.assets.tags)
        await ingest_late(a, scenario())
        await a.oee_job.step()
        assert len(await stored(b)) == 8  # A's hours: B does not compute them again
        (before,) = (await get(client_b, "/api/v1/oee", equipment="cnc-01"))["rows"]
        assert before == (await get(client_a, "/api/v1/oee", equipment="cnc-01"))["rows"][0]
        assert before["losses"]["breakdowns_s"] == 30 * 60

        events = (await get(client_b, "/api/v1/downtime", equipment="cnc-01"))["events"]
        assert [(e["start"][11:16], e["loss"]) for e in events][:2] == [
            ("07:00", "failure"),
            ("09:50", "setup"),
        ]
        # the breakdown was in truth a changeover, says an operator on server A
        r = await client_a.put(
            f"/api/v1/downtime/cnc-01/{events[0]['start_ns']}",
            json={"reason": 7, "user": "ana", "comment": "tool change overran"},
        )
        assert r.status_code == 200, r.text

        # ... which server B shows: the stop, the Pareto, the OEE
        events = (await get(client_b, "/api/v1/downtime", equipment="cnc-01"))["events"]
        assert (events[0]["reason"], events[0]["loss"]) == (7, "setup")
        assert events[0]["assigned"]["user"] == "ana"
        assert events[0]["assigned"]["comment"] == "tool change overran"
        pareto = (await get(client_b, "/api/v1/downtime/pareto", by="reason"))["rows"]
        assert [(p["label"], p["downtime_s"]) for p in pareto] == [
            ("changeover", 3000.0),
            ("jam", 0.0),
        ]
        assert T0 + H not in await stored(b)  # the 07:00 hour forgotten for both servers
        (changed,) = (await get(client_b, "/api/v1/oee", equipment="cnc-01"))["rows"]
        assert changed["losses"]["breakdowns_s"] == 0
        assert changed["losses"]["setup_adjustments_s"] == 50 * 60
        assert changed["run_s"] == before["run_s"]

        assert await b.oee_job.step() == 1  # B computes the forgotten hour again ...
        assert len(await stored(a)) == 8  # ... for A too
        assert (await get(client_a, "/api/v1/oee", equipment="cnc-01"))["rows"] == [changed]
