"""The users admin API: the listing shows each user's language and second factor; an admin
removes a user's second factor (a lost phone), a user their own with password and code;
a user's sites change after creation."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pyotp
import pytest

from shopfloor.server.api.auth import CSRF_HEADER
from shopfloor.server.security import AuditLog, Auth

from .conftest import MakeStack

S = 1_000_000_000
PASSWORD = "a long enough passphrase"


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000 * S

    def __call__(self) -> int:
        return self.now


@dataclass
class Site:
    auth: Auth
    clock: Clock
    audit: AuditLog
    app: Any

    def browser(self) -> httpx.AsyncClient:
        transport = httpx.ASGITransport(app=self.app)
        return httpx.AsyncClient(transport=transport, base_url="http://t")

    def code(self, secret: str, offset_s: int = 0) -> str:
        return str(pyotp.TOTP(secret).at(self.clock.now // S + offset_s))

    async def login(self, client: httpx.AsyncClient, name: str, code: str | None = None) -> str:
        body = {"name": name, "password": PASSWORD, "code": code}
        answer = await client.post("/api/v1/auth/login", json=body)
        assert answer.status_code == 200, answer.text
        client.headers[CSRF_HEADER] = answer.json()["csrf"]
        return str(answer.json()["csrf"])

    async def with_totp(self, name: str) -> str:
        secret, _ = await self.auth.totp_begin(name)
        assert await self.auth.totp_confirm(name, self.code(secret))
        self.clock.now += 30 * S  # that code is used: the next login needs the next one
        return secret


@pytest.fixture
async def site(make_stack: MakeStack, tmp_path: Path) -> AsyncIterator[Site]:
    clock = Clock()
    auth = Auth(None, clock=clock)
    audit = AuditLog(tmp_path / "audit.sqlite")
    await audit.start()
    stack = await make_stack(auth=auth, audit=audit)
    await auth.add_user("root", PASSWORD, role="admin")
    await auth.add_user("ada", PASSWORD, role="operator", sites=["acme/plant-1/machining"])
    yield Site(auth, clock, audit, stack.app)
    await audit.close()


async def test_the_listing_shows_each_users_language_and_second_factor(site: Site) -> None:
    await site.auth.set_locale("ada", "zh-CN")
    await site.with_totp("ada")
    async with site.browser() as admin:
        await site.login(admin, "root")
        users = {u["name"]: u for u in (await admin.get("/api/v1/users")).json()}
    assert (users["ada"]["locale"], users["ada"]["totp"]) == ("zh-CN", True)
    assert (users["root"]["locale"], users["root"]["totp"]) == (None, False)


async def test_an_admin_removes_a_users_second_factor_ending_its_sessions(site: Site) -> None:
    secret = await site.with_totp("ada")
    async with site.browser() as ada, site.browser() as admin, site.browser() as again:
        await site.login(ada, "ada", site.code(secret))
        refused = await ada.delete("/api/v1/users/ada/totp")  # an operator may not
        await site.login(admin, "root")
        removed = await admin.delete("/api/v1/users/ada/totp")
        unknown = await admin.delete("/api/v1/users/nobody/totp")
        assert (refused.status_code, removed.status_code, unknown.status_code) == (403, 204, 404)
        assert (await ada.get("/api/v1/auth/me")).status_code == 401  # its session ended
        assert (await admin.get("/api/v1/auth/me")).status_code == 200
        await site.login(again, "ada")  # the password alone is enough now
    entries = await site.audit.entries(action="user.totp.remove")
    assert [(e.user, e.target, e.outcome.value) for e in entries] == [
        ("root", "ada", "ok"),
        ("root", "nobody", "rejected"),
    ]
    assert entries[0].detail["had_totp"] is True
    (denied,) = await site.audit.entries(action="access.denied")
    assert (denied.user, denied.detail["action"]) == ("ada", "user.totp.remove")


async def test_a_user_removes_their_own_second_factor_with_password_and_code(
    site: Site,
) -> None:
    secret = await site.with_totp("ada")
    async with site.browser() as here, site.browser() as there:
        await site.login(here, "ada", site.code(secret))
        site.clock.now += 30 * S
        await site.login(there, "ada", site.code(secret))
        site.clock.now += 30 * S
        code = site.code(secret)

        async def remove(password: str, code: str) -> httpx.Response:
            body = {"password": password, "code": code}
            return await here.request("DELETE", "/api/v1/auth/totp", json=body)

        wrong_password = await remove("not it at all", code)
        wrong_code = await remove(PASSWORD, "000000")
        done = await remove(PASSWORD, code)
        none_left = await remove(PASSWORD, code)
        assert (await here.get("/api/v1/auth/me")).status_code == 200  # this session stays
        assert (await there.get("/api/v1/auth/me")).status_code == 401
    assert wrong_password.status_code == 403
    assert wrong_password.json()["error"]["field"] == "password"
    assert wrong_code.status_code == 403
    assert wrong_code.json()["error"]["field"] == "code"
    assert done.status_code == 204, done.text
    assert none_left.status_code == 409
    assert not (await site.auth.user("ada")).totp_enabled  # type: ignore[union-attr]
    entries = await site.audit.entries(action="user.totp.remove")
    assert [(e.user, e.outcome.value, e.detail.get("field")) for e in entries] == [
        ("ada", "rejected", "password"),
        ("ada", "rejected", "code"),
        ("ada", "ok", None),
    ]
    assert not await site.audit.entries(action="access.denied")  # entered once, above


async def test_a_users_sites_change_after_creation(site: Site) -> None:
    async with site.browser() as admin:
        await site.login(admin, "root")
        changed = await admin.patch(
            "/api/v1/users/ada", json={"sites": ["acme/plant-1/assembly", "acme/plant-2"]}
        )
        invalid = await admin.patch("/api/v1/users/ada", json={"sites": [""]})
        users = {u["name"]: u for u in (await admin.get("/api/v1/users")).json()}
    assert changed.status_code == 200, changed.text
    assert invalid.status_code == 422
    assert invalid.json()["error"]["field"] == "sites.0"
    assert users["ada"]["sites"] == ["acme/plant-1/assembly", "acme/plant-2"]
    (entry, _) = await site.audit.entries(action="user.update")
    assert entry.detail["before"]["sites"] == ["acme/plant-1/machining"]
    assert entry.detail["change"] == {"sites": ["acme/plant-1/assembly", "acme/plant-2"]}
