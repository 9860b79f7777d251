"""``/api/v1/spc``: control charts over a real in-memory historian through the ASGI app.

The piston-ring data (Montgomery, *Introduction to Statistical Quality Control*, 6th ed.,
Example 6.1, Table 6.3; the digits of R's qcc ``pistonrings``, see
tests/unit/server/analytics/test_spc.py) go in as points one second apart and must come
back with the published limits.
"""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pytest

from shopfloor.config.spc import SpcChartConfig
from shopfloor.model import PointBatch, Quality

from ..analytics.test_spc import FLOW_RATE, PISTON_RINGS
from .conftest import MakeStack, Stack

TAG = "acme/plant-1/machining/line-1/cell-1/lathe-1/ring_diameter"
T0 = datetime(2026, 3, 2, 6, 0, tzinfo=UTC)
T0_NS = int(T0.timestamp()) * 1_000_000_000
S = 1_000_000_000


async def _rings(stack: Stack, *, offset_s: int = 0) -> None:
    values = np.array(PISTON_RINGS).ravel()
    ts = T0_NS + (np.arange(values.size) + offset_s) * S
    await stack.ingest(PointBatch.from_columns([TAG], np.zeros(values.size), ts, values))


def _at(seconds: int) -> str:
    return datetime.fromtimestamp(T0_NS // S + seconds, UTC).isoformat()


async def test_adhoc_xbar_r_answers_the_textbook_limits(stack: Stack) -> None:
    await _rings(stack)
    answer = await stack.client.get(
        "/api/v1/spc",
        params={
            "tag": TAG,
            "kind": "xbar_r",
            "subgroup_size": 5,
            "start": _at(0),
            "end": _at(125),
            "lsl": 73.95,
            "usl": 74.05,
        },
    )
    assert answer.status_code == 200, answer.text
    body = answer.json()
    limits = body["limits"]
    assert round(limits["x"]["center"], 3) == 74.001
    assert round(limits["x"]["lcl"], 3) == 73.988
    assert round(limits["x"]["ucl"], 3) == 74.014
    assert limits["d"]["lcl"] == 0.0
    assert round(body["baseline"]["dispersion_bar"], 5) == 0.02276
    assert body["baseline"]["subgroups"] == 25
    assert len(body["points"]["x"]) == 25
    assert body["points"]["time"][1] == "2026-03-02T06:00:05.000Z"
    assert round(body["capability"]["cp"], 3) == 1.703
    assert round(body["capability"]["cpk"], 3) == 1.663
    assert body["violations"] == []  # Montgomery: the process is in control
    assert set(body["rules"]) == {"WE1", "WE2", "WE3", "WE4"}


async def test_phase_two_uses_the_baseline_and_flags_a_shift(stack: Stack) -> None:
    await _rings(stack)
    shifted = np.array(PISTON_RINGS).ravel()[:50] + 0.02  # 2 sigma of a mean of 5, and more
    ts = T0_NS + (np.arange(50) + 125) * S
    await stack.ingest(PointBatch.from_columns([TAG], np.zeros(50), ts, shifted))
    answer = await stack.client.get(
        "/api/v1/spc",
        params={
            "tag": TAG,
            "kind": "xbar_r",
            "subgroup_size": 5,
            "start": _at(125),
            "end": _at(175),
            "baseline_start": _at(0),
            "baseline_end": _at(125),
            "rules": "WE1,WE2,N2",
        },
    )
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert round(body["limits"]["x"]["ucl"], 3) == 74.014  # the baseline's, not the shift's
    assert body["baseline"]["end"] == "2026-03-02T06:02:04.000Z"
    assert len(body["points"]["x"]) == 10
    rules = {v["rule"] for v in body["violations"]}
    assert "WE1" in rules
    assert body["capability"] is None


async def test_imr_of_the_nist_flow_rate(stack: Stack) -> None:
    ts = T0_NS + np.arange(10) * S
    await stack.ingest(PointBatch.from_columns([TAG], np.zeros(10), ts, np.array(FLOW_RATE)))
    bad = PointBatch.from_points([(TAG, T0_NS + 10 * S, 999.0, int(Quality.BAD))])
    await stack.ingest(bad)  # a Bad reading is no measurement
    answer = await stack.client.get(
        "/api/v1/spc", params={"tag": TAG, "kind": "imr", "start": _at(0), "end": _at(20)}
    )
    body = answer.json()
    assert round(body["limits"]["x"]["ucl"], 4) == 55.8041
    assert round(body["limits"]["x"]["lcl"], 4) == 45.8159
    assert body["points"]["d"][0] is None  # JSON null: no moving range yet
    assert body["subgroup_size"] == 1


async def test_configured_chart(make_stack: MakeStack) -> None:
    chart = SpcChartConfig(
        name="rings",
        tag=TAG,
        kind="xbar_s",
        subgroup_size=5,
        baseline_start=T0,
        baseline_subgroups=20,
        usl=74.05,
        rules=["N1", "N2"],
    )
    stack = await make_stack(spc_charts=[chart])
    await _rings(stack)
    answer = await stack.client.get("/api/v1/spc/rings", params={"start": _at(0), "end": _at(125)})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["chart"] == "rings"
    assert body["baseline"]["subgroups"] == 20
    grid = np.array(PISTON_RINGS)[:20]
    s_bar = float(np.mean(grid.std(axis=1, ddof=1)))
    assert body["limits"]["d"]["center"] == pytest.approx(s_bar)
    assert body["limits"]["x"]["ucl"] == pytest.approx(grid.mean() + 1.4272993 * s_bar)
    assert body["capability"]["cp"] is None  # one-sided
    assert body["capability"]["cpk"] == pytest.approx(body["capability"]["cpu"])
    missing = await stack.client.get("/api/v1/spc/nope")
    assert missing.status_code == 404
    assert missing.json()["error"]["field"] == "chart"


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"kind": "xbar_r"}, "subgroup_size"),
        ({"kind": "xbar_r", "subgroup_size": 5, "bucket": "1m"}, "subgroup_size"),
        ({"kind": "xbar_r", "subgroup_size": 30}, "subgroup_size"),
        ({"kind": "imr", "bucket": "1m"}, "bucket"),
        ({"kind": "xbar_s", "bucket": "1x"}, "bucket"),
        ({"kind": "imr", "rules": "WE1,N9"}, "rules"),
        ({"kind": "imr", "lsl": 2, "usl": 1}, "usl"),
        ({"kind": "imr", "baseline_end": "2026-03-02T07:00:00Z"}, "baseline_end"),
        ({"kind": "imr", "baseline_start": "2026-03-02T07:00:00Z"}, "baseline_start"),
        ({"kind": "imr", "start": "2026-03-02T06:00:00Z", "end": "2026-03-02T06:00:01Z"}, "start"),
        ({"kind": "imr", "baseline_subgroups": 500}, "baseline_subgroups"),
        ({"kind": "pchart"}, "kind"),
    ],
)
async def test_errors_name_the_field(stack: Stack, params: dict[str, object], field: str) -> None:
    await _rings(stack)
    query = {"tag": TAG, "start": _at(0), "end": _at(125), **params}
    answer = await stack.client.get("/api/v1/spc", params=query)
    assert answer.status_code == 422, answer.text
    assert answer.json()["error"]["field"] == field


async def test_unknown_tag_is_404_naming_tag(stack: Stack) -> None:
    answer = await stack.client.get("/api/v1/spc", params={"tag": "no/such/tag", "kind": "imr"})
    assert answer.status_code == 404
    assert answer.json()["error"]["field"] == "tag"
