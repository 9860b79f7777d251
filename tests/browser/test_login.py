"""The login page in a real browser: a visitor without a session is sent to it, a wrong
password is shown, the right one lands on the page asked for, logged in, without any CSP
violation; a session that ends sends the page back to the login."""

from __future__ import annotations

from typing import TYPE_CHECKING

from playwright.async_api import Browser

from shopfloor.testing.auth import Provisioned

if TYPE_CHECKING:  # fixtures' types only: test modules are imported by path
    from tests.browser.conftest import OpenPage, WaitFor


async def test_a_visitor_logs_in_and_lands_on_the_page_asked_for(
    demo_url: str,
    demo_user: Provisioned,
    browser: Browser,
    wait_for: WaitFor,
    open_page: OpenPage,
) -> None:
    page, errors = await open_page(browser, width=1280, height=800, logged_in=False)
    await page.goto(demo_url + "/?lang=en")
    assert page.url == demo_url + "/login?next=/%3Flang%3Den"
    await page.fill("#login-name", demo_user.user)
    await page.fill("#login-password", "not the password")
    await page.click("#login-submit")
    await wait_for(
        page, "() => !document.getElementById('login-error').hidden", None, "no login error"
    )
    assert "wrong name or password" in (await page.text_content("#login-error") or "")

    await page.fill("#login-password", demo_user.password)
    async with page.expect_navigation():
        await page.click("#login-submit")
    assert page.url == demo_url + "/?lang=en"
    cookies = {c["name"]: c for c in await page.context.cookies()}
    assert cookies["shopfloor_session"]["httpOnly"]
    assert cookies["shopfloor_session"]["sameSite"] == "Strict"
    await wait_for(
        page,
        "() => document.querySelectorAll('.card').length > 0",
        None,
        "the live page shows no machine after the login",
    )

    # the session ends (logout elsewhere): the page's next request goes back to the login
    await page.evaluate(
        "() => fetch('/api/v1/auth/logout', {method: 'POST', headers: {'X-CSRF-Token':"
        " document.cookie.match(/shopfloor_csrf=([^;]+)/)[1]}})"
    )
    await page.wait_for_url(f"{demo_url}/login?next=*", timeout=20_000)
    assert not errors, f"uncaught errors or CSP violations in the page: {errors}"
