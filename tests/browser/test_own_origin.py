"""The pages ask nothing of anybody but their own server (issue 8: no outbound connection
unless configured), and the API reference is drawn locally under the strict CSP.

A real headless Chromium loads the live page and ``/docs`` from the real demo and records
every request the page makes, whatever its kind (script, font, image, fetch, websocket);
each must go to the demo's own origin, and no CSP violation may be reported.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import pytest
from playwright.async_api import Browser, Page

if TYPE_CHECKING:  # fixtures' types only: test modules are imported by path
    from tests.browser.conftest import OpenPage, WaitFor

pytestmark = pytest.mark.browser

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"

# The reference's text once RapiDoc has read /openapi.json and drawn it (in its shadow DOM).
DOCS_TEXT_JS = "() => document.querySelector('rapi-doc')?.shadowRoot?.textContent ?? ''"


def _record_requests(page: Page) -> list[str]:
    """Every URL the page asks for (documents, subresources, fetches, websockets)."""
    urls: list[str] = []
    page.on("request", lambda request: urls.append(request.url))
    page.on("websocket", lambda ws: urls.append(ws.url))
    return urls


def _off_origin(urls: list[str], base: str) -> list[str]:
    own = urlsplit(base)
    return [
        url
        for url in urls
        if not url.startswith("data:")
        and (urlsplit(url).hostname, urlsplit(url).port) != (own.hostname, own.port)
    ]


async def test_live_page_requests_only_its_own_server(
    demo_url: str, browser: Browser, wait_for: WaitFor, open_page: OpenPage
) -> None:
    page, errors = await open_page(browser, width=1280, height=800)
    urls = _record_requests(page)
    await page.goto(demo_url + "/")
    await wait_for(
        page,
        "() => document.getElementById('conn').dataset.state === 'live'",
        None,
        "the live connection did not come up",
    )
    await wait_for(page, "() => document.querySelector('.card .tag-row')", None, "no card")
    await page.wait_for_load_state("networkidle")
    assert any(url.startswith("ws://") for url in urls), "the live websocket was not seen"
    assert any("/static/vendor/echarts" in url for url in urls)
    assert _off_origin(urls, demo_url) == []
    assert errors == []


async def test_api_reference_renders_locally_under_the_csp(
    demo_url: str, browser: Browser, wait_for: WaitFor, open_page: OpenPage
) -> None:
    page, errors = await open_page(browser, width=1280, height=800)
    urls = _record_requests(page)
    answer = await page.goto(demo_url + "/docs")
    assert answer is not None
    assert answer.ok
    assert "script-src 'self'" in answer.headers["content-security-policy"]
    # the reference lists the API's operations, read from the server's own /openapi.json
    await wait_for(
        page,
        f"() => ({DOCS_TEXT_JS})().includes('/api/v1/tags/{{path}}/series')",
        None,
        "the API reference did not render the series operation",
    )
    await page.wait_for_load_state("networkidle")
    ARTIFACTS.mkdir(exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / "api-docs-1280x800.png"))
    assert any(url.endswith("/openapi.json") for url in urls)
    assert _off_origin(urls, demo_url) == []
    assert errors == [], sorted({e.split(" http")[0] for e in errors})

    # the old ReDoc address leads to the same page
    moved = await page.request.get(demo_url + "/redoc", max_redirects=0)
    assert moved.status == 308
    assert moved.headers["location"] == "/docs"
