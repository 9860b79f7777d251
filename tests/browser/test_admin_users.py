"""Managing users and API tokens on the admin page, in a real headless Chromium.

An admin (``tester``) adds a user, changes its role, creates an API token whose secret,
shown once, then works against the API acting as the admin, revokes it after confirming
(the secret is refused from then on), edits the user's sites, removes its second factor
and disables the user (who can no longer log in). The new user sets up a second factor
on "my account" with a code of the shown secret. Every effect is checked
through the API, not only on the page.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pyotp
import pytest
from playwright.async_api import Browser, Page

from shopfloor.testing.auth import Provisioned, bearer, log_in_page, new_secret

if TYPE_CHECKING:  # fixtures' types only: test modules are imported by path
    from tests.browser.conftest import OpenPage, WaitFor

pytestmark = pytest.mark.browser

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
NEW_USER = "mira.admin-ui"
TOKEN = "ui-made-reader"


def _row(kind: str, value: str) -> str:
    return f'#{kind}s-body tr[data-{kind}="{value}"]'


def _wrong_code(secret: str) -> str:
    """A code no window near now accepts (the server allows a step of clock drift)."""
    totp = pyotp.TOTP(secret)
    now = time.time()
    near = {totp.at(now + step * totp.interval) for step in (-2, -1, 0, 1, 2)}
    return next(code for code in ("000000", "111111", "222222") if code not in near)


async def _add_user(page: Page, wait_for: WaitFor, admin: httpx.AsyncClient) -> str:
    """Add a user on the page (and fail a weak password); return its password."""
    # Add a user: the API then has it with the role and sites given.
    password = new_secret()
    form = page.locator("#user-add")
    await form.locator('input[name="name"]').fill(NEW_USER)
    await form.locator('select[name="role"]').select_option("admin")
    await form.locator('input[name="password"]').fill(password)
    await form.locator('input[name="sites"]').fill("acme/plant-1, acme/plant-2")
    await form.locator('button[type="submit"]').click()
    await wait_for(
        page,
        f"() => document.querySelector('{_row('user', NEW_USER)}')",
        None,
        "the new user shows",
    )
    users = {u["name"]: u for u in (await admin.get("/api/v1/users")).json()}
    assert users[NEW_USER]["role"] == "admin"
    assert users[NEW_USER]["sites"] == ["acme/plant-1", "acme/plant-2"]

    # A bad password is refused with the API's reason, and nothing is added.
    await form.locator('input[name="name"]').fill("weak-one")
    await form.locator('input[name="password"]').fill("password")
    await form.locator('button[type="submit"]').click()
    await wait_for(
        page,
        "() => document.getElementById('users-action-msg').dataset.outcome === 'error'",
        None,
        "a refused password is said",
    )
    assert "password" in await page.locator("#users-action-msg").inner_text()
    assert "weak-one" not in {u["name"] for u in (await admin.get("/api/v1/users")).json()}

    return password


async def _set_up_totp(
    own: Page, wait_for: WaitFor, base: str, admin: httpx.AsyncClient, password: str
) -> str:
    """The new user (logged in on ``own``) turns TOTP on from "my account", confirmed with
    a code of the secret shown; return the secret."""
    await own.goto(f"{base}/admin")
    await wait_for(
        own,
        "() => document.getElementById('users').dataset.state === 'available'",
        None,
        "the new admin's page loads",
    )
    await own.locator("#totp-begin").click()
    await wait_for(
        own, "() => !document.getElementById('totp-box').hidden", None, "the TOTP secret shows"
    )
    secret = (await own.locator("#totp-secret").inner_text()).strip()
    assert (await own.locator("#totp-uri").inner_text()).startswith("otpauth://totp/")
    await own.locator('#totp-confirm input[name="code"]').fill(_wrong_code(secret))
    await own.locator('#totp-confirm button[type="submit"]').click()
    await wait_for(
        own,
        "() => document.getElementById('account-msg').dataset.outcome === 'error'",
        None,
        "a wrong code is refused",
    )
    await own.locator('#totp-confirm input[name="code"]').fill(pyotp.TOTP(secret).now())
    await own.locator('#totp-confirm button[type="submit"]').click()
    await wait_for(
        own,
        "() => document.getElementById('account-msg').dataset.outcome === 'ok'",
        None,
        "the right code turns TOTP on",
    )
    login = {"name": NEW_USER, "password": password}
    assert (await admin.post("/api/v1/auth/login", json=login)).status_code != 200

    return secret


async def _change_and_disable(
    page: Page,
    own: Page,
    wait_for: WaitFor,
    admin: httpx.AsyncClient,
    *,
    password: str,
    secret: str,
) -> None:
    """Change the new user's role (its own page then says only an admin manages users but
    keeps "my account"), then disable it."""
    # Change its role, then disable it: it can no longer log in, even with a code.
    await page.reload()
    await wait_for(
        page,
        f"() => document.querySelector('{_row('user', NEW_USER)}')",
        None,
        "the users show again",
    )
    await page.locator(f"{_row('user', NEW_USER)} select.user-role").select_option("operator")
    await wait_for(
        page,
        f"() => document.querySelector('{_row('user', NEW_USER)} select').value"
        " === 'operator' && document.getElementById('users-action-msg').dataset.outcome"
        " === 'ok'",
        None,
        "the role change is said",
    )
    users = {u["name"]: u for u in (await admin.get("/api/v1/users")).json()}
    assert users[NEW_USER]["role"] == "operator"
    await own.reload()
    await wait_for(
        own,
        "() => document.getElementById('users').dataset.state === 'forbidden'",
        None,
        "a non-admin is told only an admin manages users",
    )
    assert await own.locator("#users-table").is_hidden()
    assert await own.locator("#my-password").is_visible()

    # Edit its sites after creation, and remove its second factor (a lost phone).
    await page.locator(f"{_row('user', NEW_USER)} input.user-sites").fill("acme/plant-3")
    await page.locator(f'{_row("user", NEW_USER)} button[data-action="save-sites"]').click()
    await wait_for(
        page,
        f"() => document.querySelector('{_row('user', NEW_USER)} input.user-sites')?.value"
        " === 'acme/plant-3' && document.getElementById('users-action-msg').dataset.outcome"
        " === 'ok'",
        None,
        "the sites change is said",
    )
    users = {u["name"]: u for u in (await admin.get("/api/v1/users")).json()}
    assert users[NEW_USER]["sites"] == ["acme/plant-3"]
    assert users[NEW_USER]["totp"] is True
    await page.locator(f'{_row("user", NEW_USER)} button[data-action="remove-totp"]').click()
    await wait_for(
        page, "() => document.getElementById('confirm-dialog').open", None, "removing asks first"
    )
    await page.locator('#confirm-dialog button[value="confirm"]').click()
    await wait_for(
        page,
        f"() => document.querySelector('{_row('user', NEW_USER)} td[data-totp]')"
        "?.dataset.totp === 'false'",
        None,
        "the second factor shows removed",
    )
    users = {u["name"]: u for u in (await admin.get("/api/v1/users")).json()}
    assert users[NEW_USER]["totp"] is False

    await page.locator(f'{_row("user", NEW_USER)} button[data-action="disable-user"]').click()
    await wait_for(
        page,
        f"() => document.querySelector('{_row('user', NEW_USER)}')?.dataset.disabled === 'true'",
        None,
        "the user shows disabled",
    )
    users = {u["name"]: u for u in (await admin.get("/api/v1/users")).json()}
    assert users[NEW_USER]["disabled"] is True
    code = pyotp.TOTP(secret).now()
    login = {"name": NEW_USER, "password": password, "code": code}
    assert (await admin.post("/api/v1/auth/login", json=login)).status_code in (401, 403)


async def _create_and_revoke_token(
    page: Page, wait_for: WaitFor, base: str, admin: httpx.AsyncClient
) -> None:
    """A token made on the page works until it is revoked there."""
    # Create a token: its secret shows once and works on the API.
    form = page.locator("#token-add")
    await form.locator('input[name="name"]').fill(TOKEN)
    await form.locator('select[name="role"]').select_option("read")
    await form.locator('select[name="expires"]').select_option("30")
    await form.locator('input[name="user"]').fill("tester")  # acts as the admin tester
    await form.locator('button[type="submit"]').click()
    await wait_for(
        page,
        "() => !document.getElementById('token-secret-box').hidden",
        None,
        "the new token's secret shows",
    )
    token_secret = (await page.locator("#token-secret").inner_text()).strip()
    await page.screenshot(path=str(ARTIFACTS / "admin-token-secret.png"))
    async with httpx.AsyncClient(base_url=base, timeout=5) as client:
        assert (await client.get("/api/v1/tags", headers=bearer(token_secret))).status_code == 200
    tokens = {t["name"]: t for t in (await admin.get("/api/v1/tokens")).json()}
    assert tokens[TOKEN]["role"] == "read"
    assert tokens[TOKEN]["expires_ns"] is not None
    assert tokens[TOKEN]["user"] == "tester"

    # Revoke it: Cancel keeps it; confirming revokes it and the secret is refused (401).
    row = _row("token", tokens[TOKEN]["id"])
    await wait_for(page, f"() => document.querySelector('{row}')", None, "the token is listed")
    await page.locator(f'{row} button[data-action="revoke"]').click()
    await wait_for(
        page, "() => document.getElementById('confirm-dialog').open", None, "revoking asks first"
    )
    assert TOKEN in await page.locator("#confirm-dialog").inner_text()
    await page.locator('#confirm-dialog button[value="cancel"]').click()
    assert await page.locator(row).get_attribute("data-revoked") == "false"
    await page.locator(f'{row} button[data-action="revoke"]').click()
    await wait_for(
        page, "() => document.getElementById('confirm-dialog').open", None, "revoking asks again"
    )
    await page.locator('#confirm-dialog button[value="confirm"]').click()
    await wait_for(
        page,
        f"() => document.querySelector('{row}')?.dataset.revoked === 'true'",
        None,
        "the token shows revoked",
    )
    async with httpx.AsyncClient(base_url=base, timeout=5) as client:
        assert (await client.get("/api/v1/tags", headers=bearer(token_secret))).status_code == 401


async def test_admin_manages_users_and_tokens(
    browser: Browser, demo_url: str, demo_user: Provisioned, open_page: OpenPage, wait_for: WaitFor
) -> None:
    page, errors = await open_page(browser, width=1366, height=1000)
    await page.goto(f"{demo_url}/admin")
    await wait_for(
        page,
        "() => document.querySelector('#users-body tr[data-user=\"tester\"]')",
        None,
        "the admin page lists the users",
    )
    headers = bearer(demo_user.token)
    async with httpx.AsyncClient(base_url=demo_url, timeout=5, headers=headers) as admin:
        password = await _add_user(page, wait_for, admin)
        own, own_errors = await open_page(browser, width=1366, height=1000, logged_in=False)
        await log_in_page(own, demo_url, Provisioned(NEW_USER, password, ""))
        secret = await _set_up_totp(own, wait_for, demo_url, admin, password)
        await _change_and_disable(page, own, wait_for, admin, password=password, secret=secret)
        await _create_and_revoke_token(page, wait_for, demo_url, admin)
    assert own_errors == []
    assert errors == []
