"""The admin page and writing a set point from the machine page, in a real headless Chromium.

A demo of its own (writes change it) reads the simulated plant over Modbus TCP, whose CNC
mills have a writable spindle speed set point. The admin page must list the demo's
connectors and an intact audit chain; a write is refused while the connector's writes
are off, goes through once an admin enables them (after confirming), shows old → new
before it is confirmed and the device's read-back after, reaches the simulated device
(its value read back through the API) and shows in the audit log with old and new.
Screenshots go to ``test-artifacts/``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from playwright.async_api import Browser, Page, Route

from shopfloor.testing.auth import Provisioned, bearer, log_in_page, provision
from shopfloor.testing.processes import free_port, shopfloor_process

if TYPE_CHECKING:  # fixtures' types only: test modules are imported by path
    from tests.browser.conftest import OpenPage, WaitFor

pytestmark = pytest.mark.browser

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
CNC = "acme/plant-1/machining/line-1/cell-1/cnc-01"
SETPOINT = f"{CNC}/spindle_speed_sp"
CONNECTOR = "modbus-cnc-01"
USER = "ada"
"""The admin this module's demo is provisioned with: the pages log in as her."""
ADMIN: dict[str, Provisioned] = {}

# Text a page shows through data-i18n, with the key it came from.
I18N_JS = """() => [...document.querySelectorAll("[data-i18n]")].map(
  (el) => [el.dataset.i18n, el.textContent.trim()])"""


@pytest.fixture(scope="module")
def modbus_demo(chromium: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``shopfloor demo --protocol modbus``: the plant's set points are holding registers."""
    workdir = tmp_path_factory.mktemp("admin-demo")
    ADMIN[USER] = provision(workdir / "data", role="admin", user=USER)
    port = free_port()
    args = ["demo", "--port", str(port), "--data-dir", "data", "--protocol", "modbus"]
    with shopfloor_process(
        [*args, "--no-status"], port=port, workdir=workdir, ready_timeout_s=40
    ) as server:
        yield server.base_url


async def _get(base: str, path: str) -> Any:
    headers = bearer(ADMIN[USER].token)
    async with httpx.AsyncClient(base_url=base, timeout=5, headers=headers) as client:
        response = await client.get(path)
    return response.status_code, (response.json() if response.status_code == 200 else None)


async def _latest(base: str, path: str) -> Any:
    _, body = await _get(base, "/api/v1/values/latest")
    return next((v["value"] for v in body["values"] if v["path"] == path), None)


async def _ask_on_machine_page(page: Page, wait_for: WaitFor, base: str, value: str) -> None:
    """Open the machine page, open the set point's Set form, type ``value`` and a name, ask."""
    await page.goto(f"{base}/machines/cnc-01")
    await wait_for(
        page,
        f"() => document.querySelector('button[data-set=\"{SETPOINT}\"]')",
        None,
        "the set point has a Set control",
    )
    assert await page.locator("button[data-set]").count() == 1  # only the set point is writable
    await page.locator(f'button[data-set="{SETPOINT}"]').click()
    form = page.locator(f'tr[data-set-for="{SETPOINT}"] form.set-form')
    await form.locator('input[name="value"]').fill(value)
    assert await form.locator('input[name="user"]').input_value() == USER  # the login's
    await form.locator('button[type="submit"]').click()


async def _admin_page_shows_the_demo(page: Page, wait_for: WaitFor, base: str) -> None:
    await page.goto(f"{base}/admin")
    await wait_for(
        page,
        f"() => document.querySelector('#connectors-body tr[data-connector=\"{CONNECTOR}\"]')",
        None,
        "the admin page lists the demo's connectors",
    )
    names = await page.locator("#connectors-body tr").evaluate_all(
        "(rows) => rows.map((r) => r.dataset.connector)"
    )
    _, connectors = await _get(base, "/api/v1/connectors")
    assert names == [c["name"] for c in connectors["connectors"]]
    await wait_for(
        page,
        "() => document.getElementById('chain-badge').dataset.chain === 'intact'",
        None,
        "the audit chain shows intact",
    )
    # Users and tokens: "not available" while the server has no such API (issue 8)
    users, _ = await _get(base, "/api/v1/users")
    expected = {404: "unavailable", 200: "available"}.get(users, "failed")
    assert await page.locator("#users").get_attribute("data-state") == expected
    if users == 404:
        assert "not available" in await page.locator("#users-msg").inner_text()


async def _enable_writes(page: Page, wait_for: WaitFor, base: str) -> None:
    """Enabling asks first; Cancel leaves the switch off, confirming turns it on."""
    switch = page.locator(f'#switches-body tr[data-connector="{CONNECTOR}"]')
    assert await switch.get_attribute("data-enabled") == "false"
    assert await page.locator("#admin-user").input_value() == USER  # the login's
    await switch.locator("button").click()
    dialog = page.locator("#confirm-dialog")
    await wait_for(
        page,
        "() => document.getElementById('confirm-dialog').open",
        None,
        "enabling writes asks for a confirmation",
    )
    assert SETPOINT in await dialog.inner_text()
    await page.screenshot(path=str(ARTIFACTS / "admin-enable-confirm.png"))
    await dialog.locator('button[value="cancel"]').click()
    assert await switch.get_attribute("data-enabled") == "false"
    await switch.locator("button").click()
    await dialog.locator('button[value="confirm"]').click()
    await wait_for(
        page,
        f"() => document.querySelector('#switches-body tr[data-connector=\"{CONNECTOR}\"]')"
        "?.dataset.enabled === 'true'",
        None,
        "the switch shows writes on",
    )
    _, writes = await _get(base, "/api/v1/writes")
    assert {c["connector"]: c["enabled"] for c in writes["connectors"]}[CONNECTOR] is True


async def _audit_shows_the_writes(page: Page, wait_for: WaitFor, base: str) -> None:
    """The switch, the refused write, the request and the confirmed write; a filter; CSV."""
    await page.goto(f"{base}/admin")
    await wait_for(
        page,
        "() => document.querySelectorAll('#audit-body tr[data-action=\"equipment.write\"]')"
        ".length >= 3 && document.getElementById('chain-badge').dataset.chain === 'intact'",
        None,
        "the audit log shows the writes and the chain intact",
    )
    rows = await page.locator("#audit-body tr").evaluate_all(
        "(rows) => rows.map((r) => ({seq: Number(r.dataset.seq), action: r.dataset.action,"
        " outcome: r.dataset.outcome,"
        " text: r.textContent, change: r.querySelector('.change').textContent}))"
    )
    seqs = [r["seq"] for r in rows]
    assert seqs == sorted(seqs, reverse=True)  # newest first
    confirm = [r for r in rows if r["action"] == "equipment.write" and "(confirm)" in r["text"]]
    assert [r["outcome"] for r in confirm] == ["ok"]
    assert confirm[0]["change"].endswith("→ 9300"), confirm[0]
    assert any(r["action"] == "equipment.write" and r["outcome"] == "rejected" for r in rows)
    assert any(r["action"] == "connector.writes" and r["change"] == "false → true" for r in rows)

    await page.locator("#audit-outcome").select_option("rejected")
    await page.locator('#audit-filters button[type="submit"]').click()
    await wait_for(
        page,
        "() => [...document.querySelectorAll('#audit-body tr')].every("
        "(r) => r.dataset.outcome === 'rejected') && document.querySelector('#audit-body tr')",
        None,
        "the outcome filter leaves only rejected entries",
    )
    async with page.expect_download() as download_info:
        await page.locator("#audit-csv").click()
    download = await download_info.value
    csv = await asyncio.to_thread(Path(await download.path()).read_text, encoding="utf-8")
    lines = csv.strip().splitlines()
    assert lines[0].startswith("seq,time,user,action,target,outcome")
    assert len(lines) == 1 + await page.locator("#audit-body tr").count()
    assert all(",rejected," in line for line in lines[1:])
    await page.screenshot(path=str(ARTIFACTS / "admin-audit.png"), full_page=True)


async def test_admin_enables_writes_and_a_set_point_reaches_the_machine(
    browser: Browser, modbus_demo: str, open_page: OpenPage, wait_for: WaitFor
) -> None:
    base = modbus_demo
    page, errors = await open_page(browser, width=1366, height=900)
    await log_in_page(page, modbus_demo, ADMIN[USER])

    # Writes are off until an admin turns them on: the machine page says so.
    await _ask_on_machine_page(page, wait_for, base, "9300")
    await wait_for(
        page,
        "() => document.querySelector('.set-result')?.dataset.outcome === 'error'",
        None,
        "a write while writes are off is refused",
    )
    assert "Admin" in await page.locator(".set-result").inner_text()

    await _admin_page_shows_the_demo(page, wait_for, base)
    await _enable_writes(page, wait_for, base)

    # The machine page: ask, see old → new, confirm, see the read-back.
    await _ask_on_machine_page(page, wait_for, base, "9300")
    await wait_for(
        page,
        "() => document.getElementById('confirm-dialog').open",
        None,
        "a write asks for a confirmation",
    )
    asked = await page.locator("#confirm-text").inner_text()
    assert "→ 9,300 rpm" in asked, asked
    await page.screenshot(path=str(ARTIFACTS / "machine-write-confirm.png"))
    await page.locator('#confirm-dialog button[value="confirm"]').click()
    await wait_for(
        page,
        "() => document.querySelector('.set-result')?.dataset.outcome === 'written'",
        None,
        "the write is confirmed and read back",
    )
    assert await page.locator(".set-result").get_attribute("data-read-back") == "9300"
    await page.screenshot(path=str(ARTIFACTS / "machine-write-done.png"))

    # The simulated device holds it: its register, polled by the connector, reads 9300.
    for _ in range(75):  # guard only: the connector polls every second
        if await _latest(base, SETPOINT) == 9300.0:
            break
        await asyncio.sleep(0.2)
    assert await _latest(base, SETPOINT) == 9300.0

    await _audit_shows_the_writes(page, wait_for, base)
    assert errors == []


async def test_admin_page_in_chinese(
    browser: Browser, modbus_demo: str, open_page: OpenPage, wait_for: WaitFor
) -> None:
    page, errors = await open_page(browser, width=1024, height=768)
    await log_in_page(page, modbus_demo, ADMIN[USER])
    await page.goto(f"{modbus_demo}/admin?lang=zh-CN")
    await wait_for(
        page,
        "() => document.getElementById('chain-badge').dataset.chain === 'intact'"
        " && document.querySelector('#connectors-body tr[data-connector]')",
        None,
        "the Chinese admin page fills",
    )
    assert await page.locator("h1").inner_text() == "系统管理"
    assert "哈希链完整" in await page.locator("#chain-badge").inner_text()
    assert await page.locator('.menu a[aria-current="page"]').inner_text() == "管理"
    untranslated = [key for key, text in await page.evaluate(I18N_JS) if text == key]
    assert untranslated == []
    await page.screenshot(path=str(ARTIFACTS / "admin-zh-CN.png"), full_page=True)
    assert errors == []


def _answer(body: object) -> Callable[[Route], Awaitable[None]]:
    async def fulfill(route: Route) -> None:
        await route.fulfill(json=body)

    return fulfill


async def test_users_and_tokens_show_once_the_server_has_them(
    browser: Browser, modbus_demo: str, open_page: OpenPage, wait_for: WaitFor
) -> None:
    """The lists as the API gives them (here answered by routes shaped like its answers:
    UserOut, TokenOut, MeOut); managing them is tests/browser/test_admin_users.py's."""
    page, errors = await open_page(browser, width=1366, height=900)
    await log_in_page(page, modbus_demo, ADMIN[USER])
    users = [
        {"name": "ada", "role": "admin", "sites": [], "disabled": False, "created_ns": 0},
        {"name": "bo", "role": "operator", "sites": ["acme/plant-1"], "disabled": True},
    ]
    tokens = [
        {
            "id": "t1",
            "name": "grafana",
            "role": "viewer",
            "owner": "ada",
            "created_ns": 0,
            "expires_ns": None,
            "revoked_ns": None,
        },
    ]
    me = {"name": "ada", "role": "admin", "permissions": [], "sites": [], "kind": "session"}
    for path, body in (("users", users), ("tokens", tokens), ("auth/me", me)):
        await page.route(f"{modbus_demo}/api/v1/{path}", _answer(body))
    await page.goto(f"{modbus_demo}/admin")
    await wait_for(
        page,
        "() => document.getElementById('users').dataset.state === 'available'"
        " && document.querySelector('#tokens-body tr')"
        " && document.getElementById('admin-user').readOnly",
        None,
        "the users and tokens show and the name is the login's",
    )
    rows = await page.locator("#users-body tr").evaluate_all(
        "(rows) => rows.map((r) => [r.cells[0].textContent, r.querySelector('select').value,"
        " r.querySelector('.user-sites').value, r.cells[5].firstChild.textContent])"
    )
    assert rows == [  # no sites: the field is empty, its placeholder says "all sites"
        ["ada", "admin", "", "active"],
        ["bo", "operator", "acme/plant-1", "disabled"],
    ]
    token = await page.locator("#tokens-body tr td").all_text_contents()
    assert token == ["grafana", "viewer", "itself", "ada", "never", "active Revoke"]
    assert await page.locator("#admin-user").input_value() == "ada"
    assert errors == []
