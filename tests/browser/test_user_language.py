"""A user's own language in a real headless Chromium against the demo: chosen once in the
language menu, it is saved with the account and follows the user to a browser that has
neither ``?lang=`` nor the language cookie; the login page speaks the browser's language."""

from __future__ import annotations

import re
import secrets
from typing import TYPE_CHECKING

import httpx
import pytest
from playwright.async_api import Browser

from shopfloor.testing.auth import Provisioned, log_in_page

if TYPE_CHECKING:  # fixtures' types only: test modules are imported by path
    from tests.browser.conftest import WaitFor

pytestmark = pytest.mark.browser


async def test_the_menu_s_choice_follows_the_user_to_another_browser(
    demo_url: str, browser: Browser, wait_for: WaitFor, demo_user: Provisioned
) -> None:
    name, password = f"lin-{secrets.token_hex(3)}", secrets.token_urlsafe(18)
    async with httpx.AsyncClient(base_url=demo_url, headers=demo_user.headers) as admin:
        made = await admin.post(
            "/api/v1/users", json={"name": name, "password": password, "role": "viewer"}
        )
    assert made.status_code == 201, made.text
    lin = Provisioned(name, password, "")

    # An English browser: the user picks Chinese in the menu.
    first = await browser.new_context(locale="en-US")
    page = await first.new_page()
    await log_in_page(page, demo_url, lin)
    await page.goto(demo_url + "/overview")
    assert await page.input_value("#lang-select") == "en"
    async with page.expect_navigation():
        await page.select_option("#lang-select", "zh-CN")
    me = await (await page.request.get(f"{demo_url}/api/v1/auth/me")).json()
    assert me["locale"] == "zh-CN"
    await first.close()

    # Another English browser, no cookie, no ?lang=: Chinese, rendered and in the modules.
    second = await browser.new_context(locale="en-US")
    page = await second.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    await log_in_page(page, demo_url, lin)
    assert not [c for c in await second.cookies() if c["name"] == "shopfloor_lang"]
    response = await page.goto(demo_url + "/trends")
    assert response is not None
    served = await response.text()
    assert '<html lang="zh-CN"' in served
    await wait_for(
        page,
        "() => document.getElementById('trends-zoom-out').textContent === '缩小'",
        None,
        "the trend explorer's module did not speak the user's language",
    )
    assert await page.input_value("#lang-select") == "zh-CN"
    assert errors == []
    await second.close()


async def test_the_login_page_speaks_the_browser_s_chinese(
    demo_url: str, browser: Browser, wait_for: WaitFor
) -> None:
    context = await browser.new_context(locale="zh-CN")
    page = await context.new_page()
    response = await page.goto(demo_url + "/login")
    assert response is not None
    served = await response.text()
    assert '<html lang="zh-CN"' in served
    assert re.search(r"<title[^>]*>shopfloor · 登录</title>", served)
    assert re.search(r'id="login-submit"[^>]*>登录</button>', served)
    # A failed login's own message comes from the server; the page keeps its language.
    await page.fill("#login-name", "nobody")
    await page.fill("#login-password", "not the password")
    await page.click("#login-submit")
    await wait_for(
        page,
        "() => !document.getElementById('login-error').hidden",
        None,
        "the login page showed no refusal",
    )
    assert await page.text_content("label[for=login-password]") == "密码"
    await context.close()
