"""Editing the plant through the API of the real server: written back to the plant file
with its comments, applied live (tree, historian tags, alarm rules), audited, and the
same after a restart."""

from __future__ import annotations

import asyncio
import io
import shutil
import zipfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib import resources
from pathlib import Path
from typing import Any

import httpx

from shopfloor.cli_assets import export_plant
from shopfloor.config import ShopfloorConfig
from shopfloor.server.app import Server
from shopfloor.server.assets import load_asset_model
from shopfloor.testing.auth import grant
from shopfloor.testing.serving import api_client, serving

DEMO = Path(str(resources.files("shopfloor") / "demo_plant"))
MILL = "acme/plant-1/machining/line-1/cell-3/cnc-03"
PUMP = {
    "id": "cnc-04",
    "template": "cnc-mill",
    "area": "machining",
    "line": "line-1",
    "cell": "cell-4",
    "manufacturer": "Mazak",
    "serial": "MZ-2026-0001",
    "criticality": "high",
    "attributes": {"rated_kw": 18.5},
}


def copy_demo_plant(folder: Path) -> Path:
    """The demo plant as the user's own files (what `assets export` gives)."""
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(DEMO / "plant.toml", folder / "plant.toml")
    shutil.copytree(DEMO / "templates", folder / "templates")
    return folder / "plant.toml"


@asynccontextmanager
async def running(
    data_dir: Path, plant: Path | None, **simulator: Any
) -> AsyncIterator[tuple[Server, httpx.AsyncClient]]:
    settings: dict[str, Any] = {
        "server": {"port": 0, "data_dir": str(data_dir)},
        "historian": {"flush_interval_s": 0.05},
    }
    if plant is not None:
        settings["assets"] = {"plant": str(plant)}
    if simulator:
        settings["simulator"] = simulator
    config = ShopfloorConfig.model_validate(settings).resolve_paths(data_dir)
    async with (
        serving(Server(config)) as server,
        api_client(server, user="ada") as client,
    ):
        yield server, client


def equipment_paths(tree: dict[str, Any]) -> list[str]:
    out: list[str] = []

    def walk(node: dict[str, Any]) -> None:
        if node["level"] == "equipment":
            out.append(node["path"])
        for child in node["children"]:
            walk(child)

    walk(tree)
    return out


def as_user(server: Server, name: str) -> dict[str, str]:
    """Headers that act as operator ``name`` (what the journal and audit log then name)."""
    return grant(server.app, role="operator", user=name)


async def audit(client: httpx.AsyncClient, **params: Any) -> list[dict[str, Any]]:
    answer = await client.get("/api/v1/audit", params=params)
    assert answer.status_code == 200, answer.text
    entries: list[dict[str, Any]] = answer.json()
    return entries


async def test_edits_are_written_back_with_comments_applied_live_and_kept_on_restart(
    tmp_path: Path,
) -> None:
    plant = copy_demo_plant(tmp_path / "site")
    data = tmp_path / "data"
    async with running(data, plant) as (server, client):
        tree = await client.get("/api/v1/assets")
        version = tree.headers["ETag"]
        created = await client.post(
            "/api/v1/assets/equipment", json=PUMP, headers={"If-Match": version}
        )
        assert created.status_code == 201, created.text
        new_path = "acme/plant-1/machining/line-1/cell-4/cnc-04"
        assert created.json()["path"] == new_path
        assert created.headers["ETag"] != version
        patched = await client.patch(
            "/api/v1/assets/equipment/cnc-03",
            json={"location": "hall B, bay 4", "attributes": {"rated_kw": 23.0}},
        )
        assert patched.status_code == 200, patched.text
        row = patched.json()["equipment"]
        assert row["attributes"] == {"rated_kw": 23.0, "ideal_cycle_s": 110.0}  # merged
        assert row["location"] == "hall B, bay 4"

        # applied live: the tree, the historian's tags and the alarm engine know cnc-04
        paths = equipment_paths((await client.get("/api/v1/assets")).json())
        assert new_path in paths
        tags = (await client.get("/api/v1/tags", params={"prefix": new_path})).json()["tags"]
        assert f"{new_path}/vibration_rms" in {t["path"] for t in tags}
        names = {a["name"] for a in (await client.get("/api/v1/alarms?state=all")).json()}
        assert f"{new_path}/vibration_rms.HH" in names

        # a stale version is refused, nothing written
        stale = await client.patch(
            "/api/v1/assets/equipment/cnc-03",
            json={"serial": "X"},
            headers={"If-Match": version},
        )
        assert stale.status_code == 412, stale.text
        model_before = server.plant.model if server.plant else None

    text = plant.read_text()
    assert "# Line 1: three CNC mills and the conveyor that links them." in text
    assert "# Utilities: two screw compressors and the main incoming energy meter." in text
    assert 'location = "hall B, bay 4"' in text
    assert "attributes = { rated_kw = 23.0, ideal_cycle_s = 110.0 }" in text  # style kept
    assert 'id = "cnc-04"' in text
    assert "MZ-2026-0001" in text
    # the reviewed lines that were not edited are byte for byte as they were
    original = (DEMO / "plant.toml").read_text()
    assert text.startswith(original[: original.index('id = "cnc-03"')])

    async with running(data, plant) as (server, client):
        assert server.plant is not None
        assert model_before is not None
        assert server.plant.model == model_before  # a restart loads what was served
        entries = await audit(client, action="assets.equipment.create")
        assert [(e["user"], e["target"], e["outcome"]) for e in entries] == [
            ("ada", new_path, "ok")
        ]
        assert entries[0]["detail"]["after"]["serial"] == "MZ-2026-0001"
        (update,) = await audit(client, action="assets.equipment.update", outcome="ok")
        assert update["detail"]["before"]["attributes"] == {
            "rated_kw": 22.0,
            "ideal_cycle_s": 110.0,
        }
        assert update["target"] == MILL
        (refused,) = await audit(client, action="assets.equipment.update", outcome="rejected")
        assert refused["detail"]["status"] == 412
        assert refused["client"] == "127.0.0.1"


async def test_an_invalid_edit_is_refused_naming_the_field_the_file_untouched_and_audited(
    tmp_path: Path,
) -> None:
    plant = copy_demo_plant(tmp_path / "site")
    before = plant.read_bytes()
    async with running(tmp_path / "data", plant) as (server, client):
        cases: list[tuple[str, dict[str, Any], str]] = [
            ("cnc-03", {"template": "cnc-mil"}, "template"),
            ("cnc-03", {"area": "Machining Hall"}, "area"),
            ("cnc-03", {"attributes": {"spindles": 2}}, "attributes"),
            ("cnc-03", {"criticality": "urgent"}, "criticality"),
            ("cnc-03", {"id": "cnc-01"}, "id"),
            ("cnc-03", {"bindings": {"state": {"address": "hr:1"}}}, None),  # needs connector
        ]
        for equipment, patch, field in cases:
            answer = await client.patch(f"/api/v1/assets/equipment/{equipment}", json=patch)
            assert answer.status_code == 422, (patch, answer.text)
            error = answer.json()["error"]
            assert error["field"] == field, (patch, error)
            assert error["message"]
        unknown = await client.patch("/api/v1/assets/equipment/nope", json={})
        assert unknown.status_code == 404
        async with httpx.AsyncClient(base_url=server.url) as anonymous:
            unnamed = await anonymous.delete("/api/v1/assets/equipment/cnc-03")
        assert unnamed.status_code == 401
        assert unnamed.json()["error"]["field"] == "authorization"
        bad_body = await client.post("/api/v1/assets/equipment", json={**PUMP, "area": "A B"})
        assert bad_body.status_code == 422
        assert bad_body.json()["error"]["field"] == "area"
        for method in ("POST", "PUT", "PATCH"):  # malformed JSON: refused, server alive
            url = "/api/v1/assets/equipment" + ("" if method == "POST" else "/cnc-03")
            answer = await client.request(
                method,
                url,
                content=b'{"id": "x", ',
                headers={"Content-Type": "application/json"},
            )
            assert answer.status_code == 422, answer.text
            assert answer.json()["error"]["code"] == "invalid_parameter"
        assert (await client.get("/healthz")).status_code == 200

        rejected = await audit(client, outcome="rejected")
        assert len(rejected) == len(cases) + 1 + 1 + 1 + 3
        first = rejected[0]
        assert (first["user"], first["action"], first["target"]) == (
            "ada",
            "assets.equipment.update",
            MILL,
        )
        assert first["detail"]["error"]["field"] == "template"
        assert first["detail"]["request"] == {"template": "cnc-mil"}
        assert rejected[len(cases) + 1]["user"] == "(unnamed)"
        assert not await audit(client, outcome="ok")
    assert plant.read_bytes() == before


async def test_deleting_an_equipment_stops_its_alarms_and_keeps_the_next_comment(
    tmp_path: Path,
) -> None:
    plant = copy_demo_plant(tmp_path / "site")
    conv = "acme/plant-1/machining/line-1/transport/conv-01"
    async with running(tmp_path / "data", plant) as (server, client):
        alarm = f"{MILL}/vibration_rms.H"
        comment = await client.post(
            "/api/v1/alarms/comment",
            json={"alarm": alarm, "user": "bo", "comment": "checked"},
            headers=as_user(server, "bo"),
        )
        assert comment.status_code == 200, comment.text
        for equipment in ("cnc-03", "conv-01"):
            gone = await client.delete(f"/api/v1/assets/equipment/{equipment}")
            assert gone.status_code == 200, gone.text
            assert gone.json()["equipment"] is None
        names = {a["name"] for a in (await client.get("/api/v1/alarms?state=all")).json()}
        assert not any(n.startswith((MILL, conv)) for n in names)
        assert any(n.startswith("acme/plant-1/machining/line-1/cell-1/cnc-01") for n in names)
        assert server.alarms.rule(alarm) is None
        journal = (await client.get("/api/v1/alarms/journal", params={"alarm": alarm})).json()
        assert [e["comment"] for e in journal] == ["checked"]  # history kept
        late = await client.post(
            "/api/v1/alarms/comment",
            json={"alarm": alarm, "user": "bo", "comment": "again"},
            headers=as_user(server, "bo"),
        )
        assert late.status_code == 404
        deletions = await audit(client, action="assets.equipment.delete")
        assert [e["target"] for e in deletions] == [MILL, conv]
        assert deletions[0]["detail"]["before"]["serial"] == "HA-2021-7781"
    text = plant.read_text()
    assert 'id = "cnc-03"' not in text
    assert 'id = "conv-01"' not in text
    assert "# Line 2: two injection moulding presses and their conveyor." in text
    model = load_asset_model(plant, plant.parent / "templates")
    assert len(model.equipment) == 8


async def test_alarm_actions_are_audited_accepted_or_not(tmp_path: Path) -> None:
    plant = copy_demo_plant(tmp_path / "site")
    alarm = f"{MILL}/spindle_temp.H"
    async with running(tmp_path / "data", plant) as (server, client):
        cy = as_user(server, "cy")

        async def act(action: str, **body: Any) -> int:
            answer = await client.post(
                f"/api/v1/alarms/{action}", json={"alarm": alarm, **body}, headers=cy
            )
            return answer.status_code

        assert await act("comment", user="cy", comment="oil topped up") == 200
        assert await act("shelve", user="cy", duration="1h", comment="sensor swap") == 200
        assert await act("unshelve", user="cy") == 200
        assert await act("service", user="cy", in_service=False, comment="maintenance") == 200
        assert await act("service", user="cy", in_service=True) == 200
        assert await act("acknowledge", user="cy") == 422  # nothing to acknowledge
        assert await act("shelve", user="cy", duration="2d") == 422
        missing = await client.post(
            "/api/v1/alarms/acknowledge", json={"alarm": "nope", "user": "cy"}, headers=cy
        )
        assert missing.status_code == 404
        malformed = await client.post(
            "/api/v1/alarms/comment",
            content=b"{not json",
            headers={"Content-Type": "application/json", **as_user(server, "dee")},
        )
        assert malformed.status_code == 422

        entries = await audit(client, target=MILL)
        assert [(e["action"], e["outcome"]) for e in entries] == [
            ("alarm.comment", "ok"),
            ("alarm.shelve", "ok"),
            ("alarm.unshelve", "ok"),
            ("alarm.service", "ok"),
            ("alarm.service", "ok"),
            ("alarm.acknowledge", "rejected"),
            ("alarm.shelve", "rejected"),
        ]
        assert {e["user"] for e in entries} == {"cy"}
        assert entries[0]["detail"]["comment"] == "oil topped up"
        assert entries[1]["detail"]["duration"] == "1h"
        assert entries[1]["detail"]["after"] == "shelved"
        assert entries[3]["detail"]["in_service"] is False
        assert entries[5]["detail"]["error"]["code"] == "invalid_parameter"
        (unknown,) = await audit(client, target="nope")
        assert unknown["outcome"] == "rejected"
        assert unknown["detail"]["status"] == 404
        (broken,) = await audit(client, user="dee")
        assert (broken["action"], broken["outcome"]) == ("alarm.comment", "rejected")
        assert broken["detail"]["request"] == "{not json"
        since = await audit(client, since="-1h", until="now", limit=2)
        assert len(since) == 2
        assert not await audit(client, since="now+1h")


async def test_the_packaged_demo_plant_is_refused_but_exported(tmp_path: Path) -> None:
    async with running(tmp_path / "data", None, enabled=True) as (_, client):
        answer = await client.patch("/api/v1/assets/equipment/cnc-01", json={"serial": "X"})
        assert answer.status_code == 409
        assert "packaged demo plant" in answer.json()["error"]["message"]
        exported = (await client.get("/api/v1/assets/export")).json()
        assert exported["files"]["plant.toml"] == (DEMO / "plant.toml").read_text()
        (entry,) = await audit(client)
        assert (entry["outcome"], entry["detail"]["status"]) == ("rejected", 409)


async def test_concurrent_edits_are_serialised_and_a_move_renames_tags_and_alarms(
    tmp_path: Path,
) -> None:
    plant = copy_demo_plant(tmp_path / "site")
    async with running(tmp_path / "data", plant) as (server, client):
        answers = await asyncio.gather(
            *(
                client.post(
                    "/api/v1/assets/equipment",
                    json={**PUMP, "id": f"cnc-1{i}", "cell": f"cell-1{i}"},
                )
                for i in range(6)
            )
        )
        assert [a.status_code for a in answers] == [201] * 6
        assert len({a.json()["version"] for a in answers}) == 6  # one after the other
        row = (await client.get("/api/v1/assets/equipment/cnc-03")).json()["equipment"]
        moved = await client.put(
            "/api/v1/assets/equipment/cnc-03", json={**row, "area": "finishing", "line": "line-9"}
        )
        assert moved.status_code == 200, moved.text
        new = "acme/plant-1/finishing/line-9/cell-3/cnc-03"
        assert moved.json()["path"] == new
        assert server.alarms.rule(f"{new}/vibration_rms.H") is not None
        assert server.alarms.rule(f"{MILL}/vibration_rms.H") is None
        tags = (await client.get("/api/v1/tags", params={"prefix": new})).json()["tags"]
        assert len(tags) == 18  # 12 measurements, 4 calculations and 2 metrics of a mill
        (entry,) = await audit(client, action="assets.equipment.replace")
        assert entry["target"] == new
        assert entry["detail"]["before"]["area"] == "machining"

        # the export is what a restart would load: both formats give the served model
        for fmt in ("toml", "yaml"):
            exported = (await client.get("/api/v1/assets/export", params={"format": fmt})).json()
            out = tmp_path / f"export-{fmt}"
            for name, text in exported["files"].items():
                (out / name).parent.mkdir(parents=True, exist_ok=True)
                (out / name).write_text(text)
            assert load_asset_model(out / f"plant.{fmt}", out / "templates") == server.plant.model
        archive = await client.get("/api/v1/assets/export.zip")
        assert archive.headers["content-type"] == "application/zip"
        with zipfile.ZipFile(io.BytesIO(archive.content)) as files:
            assert "plant.toml" in files.namelist()
            assert files.read("plant.toml").decode() == plant.read_text()
    assert len(load_asset_model(plant, plant.parent / "templates").equipment) == 16


def test_every_write_route_is_audited_or_machine_traffic() -> None:
    import importlib
    import pkgutil

    from fastapi.routing import APIRoute

    from shopfloor.server.api import routes
    from shopfloor.server.api.audit_trail import AUDIT_KEY

    machine = {"/api/v1/ingest", "/api/v1/tags", "/api/v1/edges/{edge_id}/status"}
    # these write their own entries: a login names the user who tried (tests/unit/server/api)
    machine |= {"/api/v1/auth/login", "/api/v1/auth/logout", "/api/v1/auth/password"}
    machine |= {"/api/v1/auth/totp", "/api/v1/auth/totp/confirm", "/api/v1/auth/me"}
    for info in pkgutil.iter_modules(routes.__path__):
        module = importlib.import_module(f"{routes.__name__}.{info.name}")
        router = getattr(module, "router", None)
        for route in [] if router is None else router.routes:
            if not isinstance(route, APIRoute):
                continue
            if route.methods & {"POST", "PUT", "PATCH", "DELETE"} and route.path not in machine:
                assert AUDIT_KEY in (route.openapi_extra or {}), route.path


async def test_a_hand_edited_or_yaml_plant_is_not_overwritten(tmp_path: Path) -> None:
    plant = copy_demo_plant(tmp_path / "site")
    async with running(tmp_path / "data", plant) as (_, client):
        by_hand = plant.read_text().replace('serial = "HA-2021-7781"', 'serial = "HA-NEW"')
        plant.write_text(by_hand)
        answer = await client.patch("/api/v1/assets/equipment/cnc-01", json={"serial": "X"})
        assert answer.status_code == 409
        assert "changed on disk" in answer.json()["error"]["message"]
        assert plant.read_text() == by_hand

    yaml_dir = tmp_path / "yaml"
    export_plant(plant, plant.parent / "templates", yaml_dir, fmt="yaml")
    yaml_plant = yaml_dir / "plant.yaml"
    async with running(tmp_path / "data-yaml", yaml_plant) as (server, client):
        assert server.plant is not None
        assert len(server.plant.model.equipment) == 10
        answer = await client.delete("/api/v1/assets/equipment/cnc-01")
        assert answer.status_code == 409
        assert "YAML" in answer.json()["error"]["message"]
        files = (await client.get("/api/v1/assets/export")).json()["files"]
        assert 'id = "cnc-01"' in files["plant.toml"]  # converted to TOML, to edit that
    assert "cnc-01" in yaml_plant.read_text()


async def test_an_audit_page_past_the_largest_seq_is_refused_by_name(tmp_path: Path) -> None:
    # once a 500: SQLite cannot bind an integer of 2**63 or more (found by Schemathesis)
    async with running(tmp_path / "data", None) as (_, client):
        answer = await client.get("/api/v1/audit", params={"after_seq": 2**63})
        assert answer.status_code == 422, answer.text
        assert answer.json()["error"]["field"] == "after_seq"
        last = await client.get("/api/v1/audit", params={"after_seq": 2**63 - 1})
        assert last.status_code == 200, last.text
        assert last.json() == []
