"""A real ``Server`` from a configuration with ``[[analytics.spc]]`` charts: points ingested
over HTTP, the charts read back from ``/api/v1/spc`` with the published limits.

Data: the piston-ring inside diameters of Montgomery, *Introduction to Statistical
Quality Control*, 6th ed., Example 6.1, Table 6.3 (the digits of R's qcc
``pistonrings``), 25 subgroups of 5: X̄̄ = 74.001, X̄ chart 73.988 / 74.014, R̄ = 0.02276;
then 10 subgroups shifted by +0.02 (phase II) which the baseline's limits must flag, as
the API's violations and, judged live, as the alarm ``spc.rings`` and the derived tag
``<tag>.spc.rings``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from shopfloor.config import load_config_text
from shopfloor.server.app import Server
from shopfloor.testing.serving import api_client, serving

from ...unit.server.analytics.test_spc import PISTON_RINGS

TAG = "acme/plant-1/machining/line-1/cell-1/lathe-1/ring_diameter"
T0 = "2026-03-02T06:00:00Z"
T0_S = 1_772_431_200  # 2026-03-02T06:00:00Z


def _config(data_dir: Path) -> str:
    return f"""
[server]
port = 0
data_dir = "{data_dir}"

[historian]
path = "history.duckdb"
flush_interval_s = 0.05

[[analytics.spc]]
name = "rings"
tag = "{TAG}"
kind = "xbar_r"
subgroup_size = 5
baseline_start = {T0}
baseline_subgroups = 25
lsl = 73.95
usl = 74.05
rules = ["WE1", "WE2", "WE3", "WE4"]
alarm = true
priority = "high"

[[analytics.spc]]
name = "rings-i"
tag = "{TAG}"
kind = "imr"
baseline_start = {T0}
baseline_end = 2026-03-02T06:02:05Z
"""


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[tuple[Server, httpx.AsyncClient]]:
    config = load_config_text(_config(tmp_path / "data")).resolve_paths(tmp_path)
    async with (
        serving(Server(config)) as server,
        api_client(server) as client,
    ):
        yield server, client


def _iso(second: int) -> str:
    hours, rest = divmod(second, 3600)
    minutes, seconds = divmod(rest, 60)
    return f"2026-03-02T{6 + hours:02d}:{minutes:02d}:{seconds:02d}Z"


async def test_configured_charts_answer_the_textbook_limits_and_flag_the_shift(
    served: tuple[Server, httpx.AsyncClient],
) -> None:
    server, client = served
    values = np.array(PISTON_RINGS).ravel()
    shifted = values[:50] + 0.02
    series = np.concatenate([values, shifted])
    points = [{"tag": TAG, "ts": _iso(i), "value": float(v)} for i, v in enumerate(series.tolist())]
    assert server.spc is not None
    server.spc.retry_s = 0.0  # try the baseline again as soon as it is stored
    sent = await client.post("/api/v1/ingest", json={"points": points[:125]})
    assert sent.status_code in (200, 202), sent.text
    await server.historian.flush()
    sent = await client.post("/api/v1/ingest", json={"points": points[125:]})
    assert sent.status_code in (200, 202), sent.text
    await server.historian.flush()

    answer = await client.get("/api/v1/spc/rings", params={"start": T0, "end": _iso(175)})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert round(body["limits"]["x"]["center"], 3) == 74.001
    assert round(body["limits"]["x"]["lcl"], 3) == 73.988
    assert round(body["limits"]["x"]["ucl"], 3) == 74.014
    assert round(body["baseline"]["dispersion_bar"], 5) == 0.02276
    assert body["baseline"]["subgroups"] == 25
    assert len(body["points"]["x"]) == 35
    flagged = {v["index"] for v in body["violations"] if v["chart"] == "x"}
    assert flagged, "the shifted subgroups break the rules"
    assert min(flagged) >= 25  # the baseline itself is in control
    assert body["capability"]["points"] == 175

    imr = await client.get("/api/v1/spc/rings-i", params={"start": T0, "end": _iso(125)})
    assert imr.status_code == 200, imr.text
    i_body = imr.json()
    moving = np.abs(np.diff(values))
    assert i_body["baseline"]["dispersion_bar"] == pytest.approx(moving.mean())
    assert i_body["limits"]["x"]["ucl"] == pytest.approx(values.mean() + 3 * moving.mean() / 1.128)
    assert i_body["limits"]["d"]["ucl"] == pytest.approx(3.267 * moving.mean())

    unknown = await client.get("/api/v1/spc/nope")
    assert unknown.status_code == 404
    assert unknown.json()["error"]["field"] == "chart"

    async with asyncio.timeout(10):  # the monitor and the alarm engine follow the live channel
        while not (alarms := (await client.get("/api/v1/alarms")).json()):  # noqa: ASYNC110 - HTTP
            await asyncio.sleep(0.05)
        (alarm,) = alarms
        assert (alarm["name"], alarm["priority"], alarm["state"]) == (
            "spc.rings",
            "high",
            "unacknowledged",
        )
        assert alarm["tag"] == f"{TAG}.spc.rings"
        await server.historian.flush()
    derived = await client.get(
        f"/api/v1/tags/{TAG}.spc.rings/series", params={"start": T0, "end": _iso(175)}
    )
    assert derived.status_code == 200, derived.text
    counts = derived.json()["columns"]["value"]
    assert len(counts) == 10  # one per phase II subgroup: the baseline was not judged live
    live_flagged = {25 + i for i, c in enumerate(counts) if c > 0}
    assert live_flagged == flagged
