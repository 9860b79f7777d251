"""Calculated tags and metrics in a real Server: an edge's batch over HTTP, the historian,
the live channel, the alarm engine and the metrics task.

The plant is one power meter whose template declares a power factor calculation (an
alarm watches it) and two metrics over one-second windows.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import numpy as np
import pytest

from shopfloor.config import ShopfloorConfig
from shopfloor.model import LiveBatch, PointBatch, Quality, now_ns
from shopfloor.server.app import Server
from shopfloor.testing.serving import api_client, serving
from shopfloor.wire import ARROW_MEDIA_TYPE, encode_arrow

S = 10**9
M = "acme/plant-9/utilities/main/incomer/meter-1"

TEMPLATE = """\
type = "meter"

[[measurements]]
name = "p"
unit = "kW"

[[measurements]]
name = "q"
unit = "kvar"

[[measurements]]
name = "part_count"
unit = "parts"

[[calculations]]
name = "pf"
description = "Power factor"
range = [0.0, 1.0]
expression = "abs(p) / sqrt(p * p + q * q)"

[[calculations]]
name = "kw_per_pf"
unit = "kW"
expression = "power / pf"
inputs = { power = "p", pf = "pf" }

[[metrics]]
name = "avg_p"
unit = "kW"
expression = "avg(p)"
window = "1s"
grace = "0s"

[[metrics]]
name = "parts"
unit = "parts"
expression = "last(part_count) - first(part_count)"
window = "1s"
grace = "0s"

[[alarms]]
measurement = "pf"
kind = "L"
limit = 0.8
priority = "high"
"""

PLANT = """\
enterprise = "acme"
site = "plant-9"

[[equipment]]
id = "meter-1"
template = "meter"
area = "utilities"
line = "main"
cell = "incomer"
"""


@asynccontextmanager
async def running(tmp_path: Path) -> AsyncIterator[tuple[Server, httpx.AsyncClient]]:
    (tmp_path / "templates").mkdir()
    (tmp_path / "templates" / "meter.toml").write_text(TEMPLATE)
    (tmp_path / "plant.toml").write_text(PLANT)
    config = ShopfloorConfig.model_validate(
        {
            "server": {"port": 0, "data_dir": str(tmp_path / "data")},
            "historian": {"flush_interval_s": 0.05},
            "assets": {"plant": "plant.toml"},
        }
    ).resolve_paths(tmp_path)
    async with (
        serving(Server(config)) as server,
        api_client(server) as client,
    ):
        yield server, client


async def series_values(client: httpx.AsyncClient, tag: str) -> list[float]:
    """The values of ``tag`` as the REST API shows them."""
    response = await client.get(
        f"/api/v1/tags/{tag}/series", params={"start": "-1d", "end": "+1d", "limit": 10**6}
    )
    assert response.status_code == 200, response.text
    values: list[float] = response.json()["columns"]["value"]
    return values


async def test_calculated_tags_are_stored_published_and_alarmed_once(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    n = 50
    t0 = now_ns() - 600 * S
    ts = t0 + np.arange(n) * S
    p = rng.uniform(5.0, 20.0, n)
    q = rng.uniform(0.0, 20.0, n)
    q_quality = np.zeros(n, np.uint32)
    q_quality[7] = int(Quality.BAD_COMMUNICATION_ERROR)
    batch = PointBatch.from_columns(
        [f"{M}/p", f"{M}/q"],
        np.r_[np.zeros(n), np.ones(n)],
        np.r_[ts, ts],
        np.r_[p, q],
        np.r_[np.zeros(n, np.uint32), q_quality],
    )
    async with running(tmp_path) as (server, client):
        async with server.live.subscribe("test") as live:
            for _ in range(2):  # the second is a resend: a duplicate, stored never again
                response = await client.post(
                    "/api/v1/ingest",
                    content=encode_arrow(batch, edge="edge-1", seq=1),
                    headers={"content-type": ARROW_MEDIA_TYPE},
                )
                assert response.status_code == 200, response.text
            assert response.json()["duplicate"] is True
            published = live.drain()
        await server.historian.flush()
        stored = await server.historian.read_raw(f"{M}/pf", 0, 2**62)
        pf_ts = stored.column("ts").cast("int64").to_numpy()
        pf = stored.column("value").to_numpy(zero_copy_only=False)
        quality = stored.column("quality").to_numpy()
        want = p / np.sqrt(p * p + q * q)
        assert pf_ts.tolist() == ts.tolist()  # one point per moment, stored once
        good = np.arange(n) != 7
        np.testing.assert_allclose(pf[good], want[good])
        assert quality[good].tolist() == [0] * (n - 1)
        assert quality[7] & 0x80000000
        assert np.isnan(pf[7])
        chained = await server.historian.read_raw(f"{M}/kw_per_pf", 0, 2**62)
        np.testing.assert_allclose(
            chained.column("value").to_numpy(zero_copy_only=False)[good], (p / want)[good]
        )
        metas = {t.path: t for t in await server.historian.tags()}
        assert (metas[f"{M}/pf"].description, metas[f"{M}/pf"].eng_high) == ("Power factor", 1.0)
        assert metas[f"{M}/avg_p"].unit == "kW"
        # the live channel had each calculated point with its inputs, twice in all: the
        # batch and its resend (live readers take only points newer than they have)
        pf_live = [
            b.batch.ts[b.batch.tag_index == b.batch.tags.index(f"{M}/pf")]
            for b in published
            if isinstance(b, LiveBatch) and f"{M}/pf" in b.batch.tags
        ]
        assert [len(x) for x in pf_live] == [n, n]
        low = [i for i in range(n) if good[i] and want[i] < 0.8]
        assert low, "the random data should dip below the alarm limit"
        entries = await server.alarms.journal(alarm=f"{M}/pf.L")
        assert entries
        assert entries[0].ts_ns == int(ts[low[0]])


async def test_a_metric_is_written_for_each_window_after_it_closes(tmp_path: Path) -> None:
    async with running(tmp_path) as (server, client):
        window = (now_ns() // S + 1) * S  # the next one-second window
        ts = window + np.arange(5) * 150_000_000
        power = np.array([10.0, 12.0, 14.0, 16.0, 18.0])
        parts = np.array([100.0, 101.0, 101.0, 103.0, 107.0])
        await server.ingest_local(
            PointBatch.from_columns(
                [f"{M}/p", f"{M}/part_count"],
                np.r_[np.zeros(5), np.ones(5)],
                np.r_[ts, ts],
                np.r_[power, parts],
            )
        )
        found: dict[str, float] = {}
        async with asyncio.timeout(4):
            while len(found) < 2:
                await asyncio.sleep(0.1)
                latest = await server.historian.latest([f"{M}/avg_p", f"{M}/parts"])
                for row in latest.to_pylist():
                    if row["ts"].timestamp() * S == pytest.approx(window, abs=1000):
                        found[row["path"]] = row["value"]
        assert found == {f"{M}/avg_p": 14.0, f"{M}/parts": 7.0}
        assert server.metrics is not None
        assert server.metrics.windows >= 1
        assert await series_values(client, f"{M}/avg_p") == [
            14.0
        ]  # one point: windows without data give none


async def test_a_machine_added_through_the_api_is_calculated_from_its_next_batch(
    tmp_path: Path,
) -> None:
    new = "acme/plant-9/utilities/main/incomer/meter-2"
    n = 5
    ts = now_ns() - 60 * S + np.arange(n) * S
    p, q = np.full(n, 6.0), np.full(n, 8.0)  # a power factor of 0.6
    batch = PointBatch.from_columns(
        [f"{new}/p", f"{new}/q"], np.r_[np.zeros(n), np.ones(n)], np.r_[ts, ts], np.r_[p, q]
    )
    async with running(tmp_path) as (server, client):
        added = await client.post(
            "/api/v1/assets/equipment",
            json={
                "id": "meter-2",
                "template": "meter",
                "area": "utilities",
                "line": "main",
                "cell": "incomer",
            },
        )
        assert added.status_code == 201, added.text
        response = await client.post(
            "/api/v1/ingest",
            content=encode_arrow(batch, edge="edge-2", seq=1),
            headers={"content-type": ARROW_MEDIA_TYPE},
        )
        assert response.status_code == 200, response.text
        await server.historian.flush()
        pf = await server.historian.read_raw(f"{new}/pf", 0, 2**62)
        np.testing.assert_allclose(pf.column("value").to_numpy(zero_copy_only=False), [0.6] * n)
        assert server.metrics is not None
        assert len(server.metrics) == 4  # two per meter
