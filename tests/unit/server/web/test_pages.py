"""The overview and machine pages' routes: what renders, for which machine, and the 404."""

from __future__ import annotations

from collections.abc import AsyncIterator
from html.parser import HTMLParser

import httpx
import pytest
from fastapi import FastAPI

from shopfloor.server.assets import AssetModel
from shopfloor.server.assets.model import Equipment
from shopfloor.server.web import router
from shopfloor.testing.auth import grant

PATH = "acme/plant-1/machining/line-1/cell-1/cnc-01"


class _Context:
    """What the pages read of the server's context: the asset model (no editable plant)."""

    plant = None
    assets = AssetModel(
        enterprise="acme",
        site="plant-1",
        equipment=(
            Equipment(
                path=PATH,
                id="cnc-01",
                template="cnc-mill",
                area="machining",
                line="line-1",
                cell="cell-1",
                metadata={"description": "CNC machining centre"},
            ),
        ),
        tags=(),
        alarm_rules=(),
        templates={},
    )


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))


def tags_of(html: str) -> list[tuple[str, dict[str, str | None]]]:
    parser = _Tags()
    parser.feed(html)
    return parser.tags


def _client(app: FastAPI, root_path: str = "") -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, root_path=root_path)
    return httpx.AsyncClient(transport=transport, base_url="http://testserver", headers=grant(app))


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    app = FastAPI()
    app.include_router(router)
    app.state.shopfloor = _Context()
    async with _client(app) as c:
        yield c


def current_link(html: str) -> str | None:
    """The navigation link marked as the current page."""
    links = [a for t, a in tags_of(html) if t == "a" and a.get("aria-current") == "page"]
    assert len(links) <= 1, links
    return links[0]["href"] if links else None


async def test_overview_renders_its_module_and_marks_itself_in_the_navigation(
    client: httpx.AsyncClient,
) -> None:
    response = await client.get("/overview")
    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-cache"
    scripts = [a.get("src") or "" for t, a in tags_of(response.text) if t == "script"]
    assert any("/static/js/overview.js" in s for s in scripts)
    assert current_link(response.text) == "/overview"
    hrefs = {a.get("href") for t, a in tags_of(response.text) if t == "a"}
    assert {"/", "/overview", "/oee", "/trends", "/#alarms"} <= hrefs


async def test_machine_page_names_the_machine_the_asset_model_knows(
    client: httpx.AsyncClient,
) -> None:
    response = await client.get("/machines/cnc-01")
    assert response.status_code == 200
    main = next(a for t, a in tags_of(response.text) if t == "main")
    assert main["data-equipment"] == "cnc-01"
    assert main["data-path"] == PATH
    assert "CNC machining centre" in response.text
    # A machine belongs to the overview in the navigation.
    assert current_link(response.text) == "/overview"


@pytest.mark.parametrize("missing", ["cnc-99", "<img src=x onerror=alert(1)>", "CNC-01"])
async def test_unknown_machine_is_a_404_page_that_leads_back(
    client: httpx.AsyncClient, missing: str
) -> None:
    response = await client.get(f"/machines/{missing}")
    assert response.status_code == 404
    assert response.headers["content-type"].startswith("text/html")
    assert "<img" not in response.text, "the id is escaped"
    hrefs = {a.get("href") for t, a in tags_of(response.text) if t == "a"}
    assert "/overview" in hrefs


async def test_without_an_asset_model_every_machine_is_unknown() -> None:
    app = FastAPI()
    app.include_router(router)
    async with _client(app) as c:
        assert (await c.get("/machines/cnc-01")).status_code == 404
        assert (await c.get("/overview")).status_code == 200


async def test_links_follow_the_root_path_behind_a_proxy() -> None:
    app = FastAPI()
    app.include_router(router)
    app.state.shopfloor = _Context()
    async with _client(app, root_path="/plant") as c:
        response = await c.get("/plant/machines/cnc-01")
    assert response.status_code == 200
    assert current_link(response.text) == "/plant/overview"
    body = next(a for t, a in tags_of(response.text) if t == "body")
    assert body["data-base"] == "/plant"
