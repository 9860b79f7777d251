"""Site/area scoping: a user limited to one area sees only that area's tags and values,
and is refused (403, naming the tag) what lies in another area."""

from __future__ import annotations

import asyncio
import json
import shutil
import time
from collections.abc import Awaitable, Callable
from importlib import resources
from pathlib import Path
from typing import Any

import httpx
import pyarrow as pa
from websockets.asyncio.client import connect

from shopfloor.config.analytics import AnalyticsSection
from shopfloor.model import LiveBatch, PointBatch
from shopfloor.server.analytics.machines import machines_of
from shopfloor.server.analytics.service import Analytics
from shopfloor.server.api.ws import coalesce_latest
from shopfloor.server.assets.editor import PlantEditor
from shopfloor.server.assets.model import load_asset_model
from shopfloor.server.rules.alarms import AlarmState
from shopfloor.server.rules.engine import AlarmEngine
from shopfloor.server.rules.rule import AlarmRule
from shopfloor.server.security import Auth
from shopfloor.server.security.scoping import allowed, filter_items, filter_table
from shopfloor.server.security.service import Principal

from .conftest import MakeStack, RunningServer, Stack

MakeServer = Callable[..., Awaitable[RunningServer]]

PASSWORD = "a long enough passphrase"
MINE = "acme/plant-1/machining/mill-1/spindle_temp"
MINE_2 = "acme/plant-1/machining/mill-2/spindle_temp"
OTHER = "acme/plant-1/assembly/press-1/force"
LOOKALIKE = "acme/plant-1/machining-annex/saw-1/speed"
ALL = [MINE, MINE_2, OTHER, LOOKALIKE]


def _principal(*sites: str) -> Principal:
    return Principal(name="ada", role="viewer", permissions=frozenset(), sites=sites)


def test_allowed_matches_whole_segments_of_any_site() -> None:
    ada = _principal("acme/plant-1/machining", "acme/plant-2/")
    assert allowed(ada, MINE)
    assert allowed(ada, "acme/plant-1/machining")
    assert allowed(ada, "acme/plant-2/x/y")
    assert not allowed(ada, OTHER)
    assert not allowed(ada, LOOKALIKE)
    assert allowed(_principal(), OTHER)  # no sites: the whole plant
    assert allowed(None, OTHER)  # an edge's own credential is not a user


def test_filters_keep_only_the_allowed_rows_and_items() -> None:
    ada = _principal("acme/plant-1/machining")
    table = pa.table({"path": ALL, "value": [1.0, 2.0, 3.0, 4.0]})
    assert filter_table(ada, table).column("path").to_pylist() == [MINE, MINE_2]
    assert filter_table(_principal(), table).num_rows == 4
    assert filter_items(ada, ALL, lambda p: p) == [MINE, MINE_2]


async def _scoped(make_stack: MakeStack) -> tuple[Stack, httpx.AsyncClient]:
    auth = Auth(None)
    stack = await make_stack(auth=auth)
    now = time.time_ns()
    await stack.ingest(PointBatch.from_points([(p, now - 1_000_000_000, 1.0, 0) for p in ALL]))
    await auth.add_user("ada", PASSWORD, role="viewer", sites=["acme/plant-1/machining"])
    _, secret = await auth.create_token(
        "ada-script", role="read", owner="tests", expires_ns=None, user="ada"
    )
    client = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=stack.app),
        base_url="http://t",
        headers={"Authorization": f"Bearer {secret}"},
    )
    return stack, client


def _paths(rows: list[dict[str, Any]]) -> list[str]:
    return sorted(r["path"] for r in rows)


async def test_a_scoped_user_lists_only_its_own_tags_and_latest_values(
    make_stack: MakeStack,
) -> None:
    stack, ada = await _scoped(make_stack)
    async with ada:
        tags = await ada.get("/api/v1/tags")
        latest = await ada.get("/api/v1/values/latest")
        narrowed = await ada.get("/api/v1/values/latest", params={"prefix": "acme/plant-1"})
        outside = await ada.get("/api/v1/tags", params={"prefix": "acme/plant-1/assembly"})
    assert _paths(tags.json()["tags"]) == [MINE, MINE_2]
    assert _paths(latest.json()["values"]) == [MINE, MINE_2]
    assert _paths(narrowed.json()["values"]) == [MINE, MINE_2]
    assert outside.json()["tags"] == []
    # the unscoped admin still sees the whole plant
    everything = await stack.client.get("/api/v1/tags")
    assert _paths(everything.json()["tags"]) == sorted(ALL)


async def test_a_scoped_user_is_refused_another_areas_tag_by_name(make_stack: MakeStack) -> None:
    _, ada = await _scoped(make_stack)
    async with ada:
        series = await ada.get(f"/api/v1/tags/{OTHER}/series")
        history = await ada.get("/api/v1/history", params={"tags": f"{MINE},{OTHER}"})
        at = await ada.get("/api/v1/values/at", params={"tags": OTHER, "at": "now"})
        own = await ada.get(f"/api/v1/tags/{MINE}/series")
        spc = await ada.get("/api/v1/spc", params={"tag": OTHER, "kind": "imr"})
    assert series.status_code == 403
    assert OTHER in series.json()["error"]["message"]
    assert series.json()["error"]["field"] == "path"
    assert history.status_code == 403
    assert history.json()["error"]["field"] == "tags"
    assert OTHER in history.json()["error"]["message"]
    assert at.status_code == 403
    assert spc.status_code == 403
    assert spc.json()["error"]["field"] == "tag"
    assert own.status_code == 200
    assert own.json()["columns"]["value"] == [1.0]


async def test_a_prefix_history_query_is_narrowed_to_the_users_sites(
    make_stack: MakeStack,
) -> None:
    _, ada = await _scoped(make_stack)
    async with ada:
        history = await ada.get("/api/v1/history", params={"prefix": "acme"})
        at = await ada.get("/api/v1/values/at", params={"prefix": "acme", "at": "now"})
        none = await ada.get("/api/v1/history", params={"prefix": "acme/plant-1/assembly"})
    assert history.status_code == 200, history.text
    assert sorted({r["path"] for r in history.json()}) == [MINE, MINE_2]
    assert at.status_code == 200, at.text
    assert sorted({r["path"] for r in at.json()}) == [MINE, MINE_2]
    assert none.status_code == 422


async def _with_alarms(
    make_stack: MakeStack, tmp_path: Path
) -> tuple[AlarmEngine, httpx.AsyncClient]:
    rules = [
        AlarmRule("mill.hot", MINE, "HH", limit=50.0),
        AlarmRule("press.hard", OTHER, "HH", limit=50.0),
    ]
    engine = AlarmEngine(rules, tmp_path / "alarms.sqlite")
    await engine.start()
    now = time.time_ns()
    batch = PointBatch.from_points([(MINE, now, 99.0, 0), (OTHER, now, 99.0, 0)])
    assert len(await engine.process(LiveBatch(batch))) == 2
    auth = Auth(None)
    stack = await make_stack(auth=auth, alarms=engine)
    await auth.add_user("ada", PASSWORD, role="operator", sites=["acme/plant-1/machining"])
    _, secret = await auth.create_token(
        "ada-script", role="operate", owner="tests", expires_ns=None, user="ada"
    )
    client = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=stack.app),
        base_url="http://t",
        headers={"Authorization": f"Bearer {secret}"},
    )
    return engine, client


async def test_a_scoped_operator_sees_and_acts_on_only_its_own_alarms(
    make_stack: MakeStack, tmp_path: Path
) -> None:
    engine, ada = await _with_alarms(make_stack, tmp_path)
    try:
        async with ada:
            standing = await ada.get("/api/v1/alarms")
            journal = await ada.get("/api/v1/alarms/journal")
            other_journal = await ada.get("/api/v1/alarms/journal", params={"alarm": "press.hard"})
            refused = await ada.post("/api/v1/alarms/acknowledge", json={"alarm": "press.hard"})
            shelve = await ada.post(
                "/api/v1/alarms/shelve", json={"alarm": "press.hard", "duration": "1h"}
            )
            acked = await ada.post("/api/v1/alarms/acknowledge", json={"alarm": "mill.hot"})
            kpis = await ada.get("/api/v1/alarms/kpis")
        assert [a["name"] for a in standing.json()] == ["mill.hot"]
        assert {e["alarm"] for e in journal.json()} == {"mill.hot"}
        assert other_journal.status_code == 403
        assert refused.status_code == 403, refused.text
        assert refused.json()["error"]["field"] == "alarm"
        assert "press.hard" in refused.json()["error"]["message"]
        assert shelve.status_code == 403
        assert acked.status_code == 200, acked.text
        assert engine.state_of("press.hard") is AlarmState.UNACKNOWLEDGED
        assert [b["alarm"] for b in kpis.json()["bad_actors"]] == ["mill.hot"]
    finally:
        await engine.close()


def test_coalesce_keeps_only_the_principals_tags() -> None:
    batch = PointBatch.from_points([(p, 1, 1.0, 0) for p in ALL])
    ada = _principal("acme/plant-1/machining")
    rows = coalesce_latest([batch], prefix=None, sent={}, principal=ada)
    assert _paths(rows) == [MINE, MINE_2]


async def test_the_live_websocket_sends_a_scoped_user_only_its_own_tags(
    make_server: MakeServer,
) -> None:
    auth = Auth(None)
    server = await make_server(auth=auth)
    now = time.time_ns()
    await server.stack.ingest(PointBatch.from_points([(p, now, 1.0, 0) for p in ALL]))
    await auth.add_user("ada", PASSWORD, role="viewer", sites=["acme/plant-1/machining"])
    _, secret = await auth.create_token(
        "ada-ws", role="read", owner="tests", expires_ns=None, user="ada"
    )
    headers = {"Authorization": f"Bearer {secret}"}
    async with connect(
        server.ws_url, proxy=None, open_timeout=10, additional_headers=headers
    ) as ws:
        snapshot = json.loads(await asyncio.wait_for(ws.recv(), 10))
        assert _paths(snapshot["values"]) == [MINE, MINE_2]
        await ws.send(json.dumps({"type": "subscribe", "prefix": "acme"}))
        again = json.loads(await asyncio.wait_for(ws.recv(), 10))
        assert _paths(again["values"]) == [MINE, MINE_2]
        # another area's point first, then one of ours: only ours may arrive
        await server.stack.ingestor.ingest(
            PointBatch.from_points([(OTHER, now + 1, 2.0, 0)]), source="test"
        )
        await server.stack.ingestor.ingest(
            PointBatch.from_points([(MINE, now + 2, 2.0, 0)]), source="test"
        )
        seen: set[str] = set()
        while MINE not in seen:
            frame = json.loads(await asyncio.wait_for(ws.recv(), 10))
            assert frame["type"] == "values", frame
            seen |= {v["path"] for v in frame["values"]}
        assert seen == {MINE}


async def _with_plant(make_stack: MakeStack, tmp_path: Path) -> httpx.AsyncClient:
    demo = Path(str(resources.files("shopfloor") / "demo_plant"))
    shutil.copy(demo / "plant.toml", tmp_path / "plant.toml")
    shutil.copytree(demo / "templates", tmp_path / "templates")
    model = load_asset_model(tmp_path / "plant.toml", tmp_path / "templates")
    editor = PlantEditor(tmp_path / "plant.toml", tmp_path / "templates", model)
    auth = Auth(None)
    stack = await make_stack(auth=auth, plant=editor)
    await auth.add_user("eve", PASSWORD, role="engineer", sites=["acme/plant-1/machining"])
    _, secret = await auth.create_token(
        "eve-script", role="engineer", owner="tests", expires_ns=None, user="eve"
    )
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=stack.app),
        base_url="http://t",
        headers={"Authorization": f"Bearer {secret}"},
    )


def _equipment(node: dict[str, Any]) -> list[str]:
    own = [node["path"]] if node["level"] == "equipment" else []
    return own + [p for c in node["children"] for p in _equipment(c)]


async def test_a_scoped_engineer_sees_and_edits_only_its_own_area(
    make_stack: MakeStack, tmp_path: Path
) -> None:
    async with await _with_plant(make_stack, tmp_path) as eve:
        tree = (await eve.get("/api/v1/assets")).json()
        other_row = await eve.get("/api/v1/assets/equipment/imm-01")
        own_row = await eve.get("/api/v1/assets/equipment/cnc-01")
        patch_other = await eve.patch(
            "/api/v1/assets/equipment/imm-01", json={"location": "hall B"}
        )
        move_out = await eve.patch("/api/v1/assets/equipment/cnc-01", json={"area": "moulding"})
        delete_other = await eve.delete("/api/v1/assets/equipment/imm-01")
        export = await eve.get("/api/v1/assets/export")
        patch_own = await eve.patch("/api/v1/assets/equipment/cnc-01", json={"location": "hall B"})
    paths = _equipment(tree)
    assert paths
    assert all(p.startswith("acme/plant-1/machining/") for p in paths)
    assert [c["name"] for c in tree["children"][0]["children"]] == ["machining"]
    assert other_row.status_code == 403
    assert other_row.json()["error"]["field"] == "equipment_id"
    assert "imm-01" in other_row.json()["error"]["message"]
    assert own_row.status_code == 200
    assert patch_other.status_code == 403
    assert move_out.status_code == 403, move_out.text
    assert delete_other.status_code == 403
    assert export.status_code == 403
    assert patch_own.status_code == 200, patch_own.text
    assert 'location = "hall B"' in (tmp_path / "plant.toml").read_text()


async def test_analytics_refuse_other_areas_machines_and_narrow_the_plant(
    make_stack: MakeStack, tmp_path: Path
) -> None:
    demo = Path(str(resources.files("shopfloor") / "demo_plant"))
    model = load_asset_model(demo / "plant.toml", demo / "templates")
    auth = Auth(None)
    stack = await make_stack(auth=auth)
    analytics = Analytics(stack.historian, machines_of(model), AnalyticsSection(), tmp_path)
    await analytics.start()
    try:
        stack = await make_stack(auth=auth, analytics=analytics)
        await auth.add_user("ada", PASSWORD, role="operator", sites=["acme/plant-1/machining"])
        _, secret = await auth.create_token(
            "ada-oee", role="operate", owner="tests", expires_ns=None, user="ada"
        )
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=stack.app),
            base_url="http://t",
            headers={"Authorization": f"Bearer {secret}"},
        ) as ada:
            plant = await ada.get("/api/v1/oee")
            other = await ada.get("/api/v1/oee", params={"equipment": "imm-01"})
            other_line = await ada.get("/api/v1/downtime", params={"line": "line-2"})
            pareto = await ada.get("/api/v1/downtime/pareto", params={"equipment": "imm-01"})
            reason = await ada.put(
                "/api/v1/downtime/imm-01/2026-01-01T00:00:00Z", json={"reason": 1}
            )
            own = await ada.get("/api/v1/downtime", params={"equipment": "cnc-01"})
        everything = await stack.client.get("/api/v1/oee")
    finally:
        await analytics.close()
    assert plant.status_code == 200, plant.text
    assert plant.json()["equipment"] == ["cnc-01", "cnc-02", "cnc-03"]
    assert "imm-01" in everything.json()["equipment"]
    for refused in (other, other_line, pareto, reason):
        assert refused.status_code == 403, refused.text
        field = "line" if refused is other_line else "equipment"
        assert refused.json()["error"]["field"] == field
    assert "imm-01" in other.json()["error"]["message"]
    assert "line-2" in other_line.json()["error"]["message"]
    assert own.status_code == 200, own.text


async def test_plant_wide_reports_are_refused_to_a_scoped_user(make_stack: MakeStack) -> None:
    _, ada = await _scoped(make_stack)
    async with ada:
        report = await ada.get("/api/v1/reports/day", params={"date": "2026-11-27"})
    assert report.status_code == 403
    assert "whole plant" in report.json()["error"]["message"]
