"""Edges announce tag metadata with PUT /api/v1/tags; bad entries are named, none stored."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from conftest import Stack


async def test_put_tags_creates_and_updates_metadata(stack: Stack) -> None:
    body = {
        "tags": [
            {"path": "acme/p1/a/l1/c1/press/temp", "unit": "degC", "eng_low": 0, "eng_high": 300},
            {"path": "acme/p1/a/l1/c1/press/state", "data_type": "int", "states": {"1": "RUN"}},
        ]
    }
    r = await stack.client.put("/api/v1/tags", json=body)
    assert r.status_code == 200, r.text
    assert r.json() == {"registered": 2}
    tags = {t["path"]: t for t in (await stack.client.get("/api/v1/tags")).json()["tags"]}
    assert tags["acme/p1/a/l1/c1/press/temp"]["unit"] == "degC"
    assert tags["acme/p1/a/l1/c1/press/temp"]["eng_high"] == 300
    assert tags["acme/p1/a/l1/c1/press/state"]["states"] == {"1": "RUN"}

    update = {"tags": [{"path": "acme/p1/a/l1/c1/press/temp", "unit": "K"}]}
    assert (await stack.client.put("/api/v1/tags", json=update)).status_code == 200
    tags = {t["path"]: t for t in (await stack.client.get("/api/v1/tags")).json()["tags"]}
    assert tags["acme/p1/a/l1/c1/press/temp"]["unit"] == "K"


async def test_put_tags_names_the_bad_entry_and_stores_nothing(stack: Stack) -> None:
    body = {"tags": [{"path": "ok/tag"}, {"path": "bad//path"}]}
    r = await stack.client.put("/api/v1/tags", json=body)
    assert r.status_code == 422
    assert r.json()["error"]["field"] == "tags[1]"
    assert "empty segment" in r.json()["error"]["message"]
    states = {"tags": [{"path": "ok/tag", "states": {"one": "RUN"}}]}
    r = await stack.client.put("/api/v1/tags", json=states)
    assert r.status_code == 422
    assert r.json()["error"]["field"] == "tags[0]"
    assert (await stack.client.get("/api/v1/tags")).json()["tags"] == []
    r = await stack.client.put("/api/v1/tags", json={"tags": [{"path": "x", "colour": "red"}]})
    assert r.status_code == 422
    assert "colour" in r.json()["error"]["field"]
