"""The analysis pages (/oee, /trends): rendered by the web router, their modules wired in,
every string they ask for present in English and Simplified Chinese."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from fastapi import FastAPI

from shopfloor.server.web import STATIC_DIR, router
from shopfloor.testing.auth import grant

JS = STATIC_DIR / "js"
PAGES = {"/oee": ("oee-page.js", "oee.js"), "/trends": ("trends-page.js", "trends.js")}
# Namespaces of the analysis pages' own strings.
OWN = ("oee", "pareto", "stops", "loss", "duration", "trends")


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    app = FastAPI()
    app.include_router(router)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(
        transport=transport, base_url="http://testserver", headers=grant(app)
    ) as c:
        yield c


def _table(path: Path, locale: str) -> dict[str, str]:
    """One locale's strings in a strings module, read as text (the page has no build step)."""
    text = path.read_text(encoding="utf-8")
    start = re.search(rf"^\s*\"?{re.escape(locale)}\"?: \{{$", text, re.M)
    assert start, f"no {locale} table in {path.name}"
    end = text.index("\n  },", start.end())
    return dict(re.findall(r'^\s*"([\w.]+)": "(.*)",$', text[start.end() : end], re.M))


@pytest.mark.parametrize("page", sorted(PAGES))
async def test_page_renders_its_module_after_echarts_and_revalidates(
    client: httpx.AsyncClient, page: str
) -> None:
    response = await client.get(page)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert response.headers["cache-control"] == "no-cache"
    scripts = re.findall(r'<script[^>]*src="([^"]+)"', response.text)
    paths = [urlsplit(s).path for s in scripts]
    module = f"/static/js/{PAGES[page][0]}"
    assert paths[-2:] == ["/static/vendor/echarts.min.js", module]  # after the frame's nav
    assert "?v=" in scripts[1], "the page names its module by content hash"
    module_text = (JS / PAGES[page][0]).read_text("utf-8")
    # The strings register before the page's first t(): the first import.
    first_import = re.search(r'^import\s+"([^"]+)";', module_text, re.M)
    assert first_import, f"{PAGES[page][0]} does not import its strings first"
    assert first_import.group(1) == f"./strings/{PAGES[page][1]}"


# Every string in Simplified Chinese with its placeholders: tests/unit/server/web/
# test_catalogue.py, over the gettext catalogue the translations moved to.


@pytest.mark.parametrize("page", sorted(PAGES))
async def test_every_string_the_page_asks_for_exists(client: httpx.AsyncClient, page: str) -> None:
    module, strings = PAGES[page]
    known = set(_table(JS / "strings" / strings, "en"))
    known |= set(_table(JS / "strings" / "analysis.js", "en"))
    known |= set(_table(JS / "i18n.js", "en"))
    html = (await client.get(page)).text
    wanted = set(re.findall(r'data-i18n(?:-[a-z-]+)?="([\w.]+)"', html))
    for name in (module, "analysis-common.js"):
        text = (JS / name).read_text("utf-8")
        for literal in re.findall(r'"([a-z]+(?:\.[A-Za-z0-9_]+)+)"', text):
            if literal.split(".")[0] in OWN:
                wanted.add(literal)
    # Keys built at run time: `oee.loss.${key}` and `loss.${event.loss}`.
    if page == "/oee":
        losses = ["breakdowns_s", "setup_adjustments_s", "small_stops_s", "reduced_speed_s"]
        wanted |= {f"oee.loss.{k}" for k in [*losses, "rejects_s"]}
        wanted |= {"loss.failure", "loss.setup", "loss.minor"}
    missing = sorted(wanted - known)
    assert not missing, f"strings without a translation (the page would show the key): {missing}"
    assert len(wanted) > 10
