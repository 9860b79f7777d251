"""The language of the pages in a real headless Chromium against the demo: the server renders
the frame in the browser's language before any module runs, the page fetches that language's
catalogue once, and the menu's choice outlives the browser's own languages (cookie)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import pytest
from playwright.async_api import Browser

from shopfloor.testing.auth import Provisioned, log_in_page

if TYPE_CHECKING:  # fixtures' types only: test modules are imported by path
    from tests.browser.conftest import WaitFor

pytestmark = pytest.mark.browser

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
CATALOGUE = "/static/i18n/zh-CN.json"


async def test_a_chinese_browser_gets_chinese_pages_until_the_menu_says_otherwise(
    demo_url: str, browser: Browser, wait_for: WaitFor, demo_user: Provisioned
) -> None:
    context = await browser.new_context(locale="zh-CN", viewport={"width": 1280, "height": 800})
    page = await context.new_page()
    await log_in_page(page, demo_url, demo_user)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    catalogue_requests: list[str] = []
    page.on(
        "request",
        lambda r: catalogue_requests.append(r.url) if urlsplit(r.url).path == CATALOGUE else None,
    )

    response = await page.goto(demo_url + "/overview")
    assert response is not None
    served = await response.text()  # the HTML as the server sent it, before any module ran
    assert '<html lang="zh-CN"' in served
    assert re.search(r"<title[^>]*>shopfloor · 工厂总览</title>", served)
    assert re.search(r'aria-current="page">总览</a>', served)
    await wait_for(
        page,
        "() => document.getElementById('overview-title').textContent === '工厂总览'",
        None,
        "the page's own strings did not come from the catalogue",
    )
    await wait_for(
        page,
        "() => document.querySelectorAll('#floor .tile').length",
        None,
        "the overview drew no tile",
    )
    assert len(catalogue_requests) == 1, catalogue_requests  # the preload is the fetch
    assert "?v=" in catalogue_requests[0]
    assert await page.input_value("#lang-select") == "zh-CN"
    await page.screenshot(path=str(ARTIFACTS / "overview-accept-language-zh-CN.png"))

    # English from the menu: remembered in the cookie the server renders by.
    async with page.expect_navigation():
        await page.select_option("#lang-select", "en")
    cookies = {c["name"]: c["value"] for c in await context.cookies()}
    assert cookies.get("shopfloor_lang") == "en"
    catalogue_requests.clear()
    response = await page.goto(demo_url + "/trends")  # a plain link, no ?lang=
    assert response is not None
    served = await response.text()
    assert '<html lang="en"' in served
    assert "shopfloor · Trend explorer" in served
    await wait_for(
        page,
        "() => document.getElementById('trends-zoom-out').textContent === 'Zoom out'",
        None,
        "the trend explorer did not speak English",
    )
    assert catalogue_requests == [], "English needs no catalogue"
    await context.close()
    assert not errors, f"uncaught errors in the page: {errors}"
