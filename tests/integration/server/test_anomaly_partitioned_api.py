"""Scaled out, every API server answers ``GET /api/v1/anomaly`` alike (issue 9).

Two real servers (in this process) of the demo plant on one real PostgreSQL, analytics
partitioned: each machine is scored by one of them, which stores the score and its cause;
behind a load balancer either may be asked, so both answer the latest scores and the
events from the historian.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from importlib import resources
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from shopfloor.config import ShopfloorConfig
from shopfloor.model import LiveBatch, PointBatch, Quality, now_ns
from shopfloor.server.app import Server
from shopfloor.testing.auth import shared_secret_key
from shopfloor.testing.serving import api_client, serving

S = 10**9
DEMO = Path(str(resources.files("shopfloor") / "demo_plant"))
CELL = "acme/plant-1/machining/line-1"
CNCS = {"cnc-01": f"{CELL}/cell-1/cnc-01", "cnc-02": f"{CELL}/cell-2/cnc-02"}


@asynccontextmanager
async def _served(dsn: str, data_dir: Path) -> AsyncIterator[tuple[Server, httpx.AsyncClient]]:
    config = ShopfloorConfig.model_validate(
        {
            "server": {"port": 0, "data_dir": str(data_dir)},
            "historian": {"kind": "postgres", "dsn": dsn, "shared": True, "flush_interval_s": 0.05},
            "security": {"secret_key_file": str(shared_secret_key(data_dir.parent))},
            "assets": {"plant": str(DEMO / "plant.toml")},
            "analytics": {"partitions": 4, "anomaly": {"enabled": True, "settle": "0s"}},
        }
    ).resolve_paths(data_dir)
    async with serving(Server(config)) as server, api_client(server) as client:
        yield server, client


def _failed_sensors(t: int) -> PointBatch:
    """Both CNCs running, each with a Bad spindle temperature (a failed sensor)."""
    paths = [f"{p}/{tag}" for p in CNCS.values() for tag in ("state", "spindle_temp")]
    return PointBatch.from_columns(
        paths,
        np.arange(4),
        np.array([t, t + S, t, t + 2 * S]),
        np.array([1.0, 0.0, 1.0, 0.0]),
        np.array([0, int(Quality.BAD), 0, int(Quality.BAD)]),
    )


def _complete(body: dict[str, Any]) -> bool:
    return all(m["latest"] is not None for m in body["machines"]) and len(body["events"]) == 2


async def test_every_server_answers_the_latest_scores_and_events_alike(
    dsn: str, tmp_path: Path
) -> None:
    async with AsyncExitStack() as stack:
        served = [await stack.enter_async_context(_served(dsn, tmp_path / n)) for n in "ab"]
        servers = [s for s, _ in served]
        owners = [s.analytics_owner for s in servers if s.analytics_owner is not None]
        assert len(owners) == 2
        deadline = time.monotonic() + 30
        while not len(owners[0].held) == len(owners[1].held) == 2:
            assert time.monotonic() < deadline, "the analytics partitions were not split"
            await asyncio.sleep(0.05)

        # every API server gets every batch, as through the live fan-out
        t = (now_ns() // S - 60) * S
        live = LiveBatch(_failed_sensors(t), edge="edge-1")
        for server in servers:
            server.live.publish(live)

        ids = ",".join(CNCS)
        bodies: list[dict[str, Any]] = []
        deadline = time.monotonic() + 30
        while not (bodies and all(map(_complete, bodies)) and bodies[0] == bodies[1]):
            assert time.monotonic() < deadline, f"the servers did not agree: {bodies}"
            await asyncio.sleep(0.1)
            answers = [await c.get("/api/v1/anomaly") for _, c in served]
            assert all(a.status_code == 200 for a in answers), [a.text for a in answers]
            bodies = [
                {
                    "machines": [m for m in a.json()["machines"] if m["id"] in ids],
                    "events": [e for e in a.json()["events"] if e["equipment"] in CNCS.values()],
                }
                for a in answers
            ]
        body = bodies[0]
        latest = {m["id"]: m["latest"] for m in body["machines"]}
        assert latest["cnc-01"]["score"] == latest["cnc-02"]["score"] == 1000
        assert latest["cnc-01"]["cause"] == latest["cnc-02"]["cause"] == "bad spindle_temp"
        assert [(e["equipment"], e["score"], e["cause"]) for e in body["events"]] == [
            (CNCS["cnc-01"], 1000, "bad spindle_temp"),
            (CNCS["cnc-02"], 1000, "bad spindle_temp"),
        ]
        # each machine was scored by one server only: the other answered from the historian
        for path in CNCS.values():
            scored = [s for s in servers if s.anomaly is not None and path in s.anomaly.latest]
            assert len(scored) == 1
        # and one machine asked of either server
        one = [
            (await c.get("/api/v1/anomaly", params={"equipment": "cnc-02"})).json()
            for _, c in served
        ]
        assert one[0]["machines"] == one[1]["machines"]
        assert one[0]["events"] == one[1]["events"] == [body["events"][1]]
        assert (
            one[0]["scores"]
            == one[1]["scores"]
            == [{"time": body["events"][1]["time"], "score": 1000}]
        )
