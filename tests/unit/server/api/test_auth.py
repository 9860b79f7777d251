"""Logging in through the API: cookies, session fixation, CSRF, logout, timeouts, password
changes, API tokens and the websocket, against a real app over an in-process client."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from shopfloor.config.security import SecuritySection
from shopfloor.server.api.auth import CSRF_COOKIE, CSRF_HEADER, SESSION_COOKIE
from shopfloor.server.security import AuditLog, Auth

from .conftest import MakeStack, RunningServer

MakeServer = Callable[..., Awaitable[RunningServer]]

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
    client: httpx.AsyncClient
    app: Any

    def browser(self) -> httpx.AsyncClient:
        """A client without credentials, with its own cookie jar."""
        return httpx.AsyncClient(transport=httpx.ASGITransport(app=self.app), base_url="http://t")


@pytest.fixture
async def site(make_stack: MakeStack, tmp_path: Path) -> AsyncIterator[Site]:
    clock = Clock()
    settings = SecuritySection(session_idle_s=600, session_absolute_s=3600)
    auth = Auth(None, settings=settings, clock=clock)
    audit = AuditLog(tmp_path / "audit.sqlite")
    await audit.start()
    stack = await make_stack(auth=auth, audit=audit)
    await auth.add_user("root", PASSWORD, role="admin")
    await auth.add_user("ada", PASSWORD, role="operator")
    yield Site(auth, clock, audit, stack.client, stack.app)
    await audit.close()


async def login(client: httpx.AsyncClient, name: str = "ada") -> str:
    answer = await client.post("/api/v1/auth/login", json={"name": name, "password": PASSWORD})
    assert answer.status_code == 200, answer.text
    csrf: str = answer.json()["csrf"]
    return csrf


async def test_login_sets_a_strict_httponly_session_cookie_and_a_readable_csrf_cookie(
    site: Site,
) -> None:
    async with site.browser() as browser:
        answer = await browser.post(
            "/api/v1/auth/login", json={"name": "ada", "password": PASSWORD}
        )
        me = (await browser.get("/api/v1/auth/me")).json()
    cookies = {c.split("=", 1)[0]: c for c in answer.headers.get_list("set-cookie")}
    session = cookies[SESSION_COOKIE].lower()
    assert "httponly" in session
    assert "samesite=strict" in session
    assert "secure" not in session  # plain http here; https gets Secure
    assert "httponly" not in cookies[CSRF_COOKIE].lower()
    assert me["name"] == "ada"
    assert me["role"] == "operator"
    assert me["csrf"] == answer.json()["csrf"]
    assert me["permissions"] == ["operate", "read"]


async def test_the_session_cookie_is_secure_over_https(site: Site) -> None:
    transport = httpx.ASGITransport(app=site.app)
    async with httpx.AsyncClient(transport=transport, base_url="https://t") as browser:
        answer = await browser.post(
            "/api/v1/auth/login", json={"name": "ada", "password": PASSWORD}
        )
    assert all("secure" in c.lower() for c in answer.headers.get_list("set-cookie"))


async def test_a_session_id_planted_before_login_is_replaced_and_worthless(site: Site) -> None:
    async with site.browser() as attacker:
        await login(attacker)  # the attacker's own valid session, planted in the victim
        planted = attacker.cookies[SESSION_COOKIE]
        transport = httpx.ASGITransport(app=site.app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://t", cookies={SESSION_COOKIE: planted}
        ) as victim:
            answer = await victim.post(
                "/api/v1/auth/login", json={"name": "ada", "password": PASSWORD}
            )
        assert answer.cookies[SESSION_COOKIE] != planted
        assert (await attacker.get("/api/v1/auth/me")).status_code == 401  # ended at login


async def test_wrong_password_is_401_and_audited_with_the_name_tried(site: Site) -> None:
    async with site.browser() as browser:
        answer = await browser.post(
            "/api/v1/auth/login", json={"name": "ada", "password": "not it at all"}
        )
        unknown = await browser.post(
            "/api/v1/auth/login", json={"name": "nobody", "password": "not it at all"}
        )
        await login(browser)
        assert (await browser.post("/api/v1/auth/logout", headers={})).status_code == 403
    assert answer.status_code == 401
    assert unknown.json() == answer.json()  # no hint whether the user exists
    entries = [(e.user, e.action, e.outcome.value) for e in await site.audit.entries()]
    assert entries == [
        ("ada", "auth.login", "rejected"),
        ("nobody", "auth.login", "rejected"),
        ("ada", "auth.login", "ok"),
        ("ada", "access.denied", "rejected"),  # the logout without its CSRF token
    ]


async def test_lockout_is_429_audited_at_once_and_its_repeats_counted(site: Site) -> None:
    async with site.browser() as browser:
        statuses = [
            (
                await browser.post(
                    "/api/v1/auth/login", json={"name": "ada", "password": "wrong password!"}
                )
            ).status_code
            for _ in range(5)
        ]
        locked = [
            await browser.post("/api/v1/auth/login", json={"name": "ada", "password": PASSWORD})
            for _ in range(3)
        ]
    assert statuses == [401, 401, 401, 401, 429]
    assert [a.status_code for a in locked] == [429, 429, 429]
    assert int(locked[0].headers["retry-after"]) > 0
    actions = [e.action for e in await site.audit.entries(outcome=None)]
    assert actions == ["auth.login"] * 4 + ["auth.lockout"]  # the lockout, at once
    await site.audit.close()  # the attempts while locked are counted, written at close
    reopened = AuditLog(site.audit.path)
    await reopened.start()
    lockout, repeats = await reopened.entries(action="auth.lockout")
    await reopened.close()
    assert (lockout.user, lockout.detail["status"]) == ("ada", 429)
    assert "locked" in lockout.detail["reason"]
    assert (repeats.user, repeats.client, repeats.target) == ("ada", "127.0.0.1", "ada")
    assert repeats.detail["repeats"] == 3
    assert repeats.outcome.value == "rejected"


async def test_a_password_spray_from_one_address_cannot_flood_the_audit_log(
    make_stack: MakeStack, tmp_path: Path
) -> None:
    settings = SecuritySection(login_rate_per_minute=3)
    auth = Auth(None, settings=settings, clock=Clock())
    audit = AuditLog(tmp_path / "audit.sqlite")
    await audit.start()
    stack = await make_stack(auth=auth, audit=audit)
    transport = httpx.ASGITransport(app=stack.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as sprayer:
        statuses = [
            (
                await sprayer.post(
                    "/api/v1/auth/login", json={"name": f"user-{i}", "password": "Summer2026!"}
                )
            ).status_code
            for i in range(40)
        ]
    assert statuses == [401] * 3 + [429] * 37
    written = await audit.entries(action="auth.login")
    assert [(e.user, e.detail["status"]) for e in written] == [
        ("user-0", 401),
        ("user-1", 401),
        ("user-2", 401),
        ("user-3", 429),  # the first refusal for the rate, at once; the rest counted
    ]
    await audit.close()
    reopened = AuditLog(audit.path)
    await reopened.start()
    summary = (await reopened.entries(action="auth.login"))[-1]
    await reopened.close()
    assert summary.detail["repeats"] == 36  # every attempt counted
    assert summary.client == "127.0.0.1"
    assert summary.detail["targets"][:2] == ["user-4", "user-5"]  # the names tried


@pytest.mark.parametrize("sent", [None, "", "not-the-token"])
async def test_a_change_without_the_session_s_csrf_token_is_403(
    site: Site, sent: str | None
) -> None:
    async with site.browser() as browser:
        csrf = await login(browser)
        headers = {} if sent is None else {CSRF_HEADER: sent}
        refused = await browser.post(
            "/api/v1/alarms/comment", json={"alarm": "a", "comment": "x"}, headers=headers
        )
        allowed = await browser.post(
            "/api/v1/alarms/comment",
            json={"alarm": "a", "comment": "x"},
            headers={CSRF_HEADER: csrf},
        )
    assert refused.status_code == 403
    assert refused.json()["error"]["field"] == CSRF_HEADER
    assert allowed.status_code == 404  # past authentication: this app runs no alarm engine


async def test_logout_ends_the_session(site: Site) -> None:
    async with site.browser() as browser:
        csrf = await login(browser)
        session = browser.cookies[SESSION_COOKIE]
        assert (
            await browser.post("/api/v1/auth/logout", headers={CSRF_HEADER: csrf})
        ).status_code == 204
        browser.cookies.set(SESSION_COOKIE, session)  # a copy kept by someone
        assert (await browser.get("/api/v1/auth/me")).status_code == 401


async def test_an_idle_or_old_session_ends(site: Site) -> None:
    async with site.browser() as idle, site.browser() as busy:
        await login(idle)
        await login(busy)
        for _ in range(7):  # busy: used every 9 minutes, for 63 minutes
            site.clock.now += 540 * S
            if site.clock.now - 1_800_000_000 * S <= 3600 * S:
                assert (await busy.get("/api/v1/auth/me")).status_code == 200
        assert (await idle.get("/api/v1/auth/me")).status_code == 401
        assert (await busy.get("/api/v1/auth/me")).status_code == 401  # past 1 h


async def test_a_password_change_ends_the_user_s_other_sessions(site: Site) -> None:
    async with site.browser() as here, site.browser() as there:
        csrf = await login(here)
        await login(there)
        wrong = await here.post(
            "/api/v1/auth/password",
            json={"current": "not it at all", "new": "another long passphrase"},
            headers={CSRF_HEADER: csrf},
        )
        weak = await here.post(
            "/api/v1/auth/password",
            json={"current": PASSWORD, "new": "password123"},
            headers={CSRF_HEADER: csrf},
        )
        changed = await here.post(
            "/api/v1/auth/password",
            json={"current": PASSWORD, "new": "another long passphrase"},
            headers={CSRF_HEADER: csrf},
        )
        assert (wrong.status_code, weak.status_code, changed.status_code) == (403, 422, 204)
        assert weak.json()["error"]["field"] == "password"
        assert (await here.get("/api/v1/auth/me")).status_code == 200
        assert (await there.get("/api/v1/auth/me")).status_code == 401


async def test_disabling_a_user_ends_its_sessions(site: Site) -> None:
    async with site.browser() as ada, site.browser() as admin:
        await login(ada)
        csrf = await login(admin, "root")
        answer = await admin.patch(
            "/api/v1/users/ada", json={"disabled": True}, headers={CSRF_HEADER: csrf}
        )
        assert answer.status_code == 200, answer.text
        assert (await ada.get("/api/v1/auth/me")).status_code == 401
        last = await admin.patch(
            "/api/v1/users/root", json={"role": "viewer"}, headers={CSRF_HEADER: csrf}
        )
        assert last.status_code == 409


async def test_a_body_naming_another_user_is_refused(site: Site) -> None:
    async with site.browser() as browser:
        csrf = await login(browser)
        answer = await browser.post(
            "/api/v1/alarms/acknowledge",
            json={"alarm": "a", "user": "root"},
            headers={CSRF_HEADER: csrf},
        )
    assert answer.status_code == 403
    assert answer.json()["error"]["field"] == "user"


async def test_a_token_s_secret_is_shown_once_and_refused_once_revoked_or_expired(
    site: Site,
) -> None:
    client = site.client  # an admin's token
    created = await client.post(
        "/api/v1/tokens", json={"name": "grafana", "role": "read", "expires_in_s": 60}
    )
    assert created.status_code == 201, created.text
    secret = created.json()["secret"]
    token_id = created.json()["token"]["id"]
    listed = await client.get("/api/v1/tokens")
    assert secret not in listed.text
    assert token_id in listed.text
    headers = {"Authorization": f"Bearer {secret}"}
    async with site.browser() as script:
        assert (await script.get("/api/v1/tags", headers=headers)).status_code == 200
        assert (await script.get("/api/v1/users", headers=headers)).status_code == 403
        site.clock.now += 61 * S
        expired = await script.get("/api/v1/tags", headers=headers)
        assert expired.status_code == 401
        other = (await client.post("/api/v1/tokens", json={"name": "etl"})).json()
        assert (await client.delete(f"/api/v1/tokens/{other['token']['id']}")).status_code == 200
        revoked = await script.get(
            "/api/v1/tags", headers={"Authorization": f"Bearer {other['secret']}"}
        )
        assert revoked.status_code == 401
        assert revoked.headers["www-authenticate"].startswith("Bearer")
    audit = [(e.action, e.outcome.value) for e in await site.audit.entries()]
    assert ("token.create", "ok") in audit
    assert ("token.revoke", "ok") in audit
    assert secret not in str([e.detail for e in await site.audit.entries()])


async def test_users_are_created_with_the_policy_and_never_shown_with_a_hash(site: Site) -> None:
    client = site.client
    weak = await client.post(
        "/api/v1/users", json={"name": "bo", "password": "qwerty123456", "role": "viewer"}
    )
    assert weak.status_code == 422
    assert weak.json()["error"]["field"] == "password"
    made = await client.post(
        "/api/v1/users",
        json={"name": "bo", "password": PASSWORD, "role": "viewer", "sites": ["acme/plant-1"]},
    )
    assert made.status_code == 201, made.text
    assert made.json()["sites"] == ["acme/plant-1"]
    taken = await client.post("/api/v1/users", json={"name": "bo", "password": PASSWORD})
    assert taken.status_code == 409
    listed = (await client.get("/api/v1/users")).text
    assert "argon2" not in listed
    assert PASSWORD not in str([e.detail for e in await site.audit.entries()])


async def test_the_websocket_needs_a_credential_and_the_server_s_own_origin(
    make_server: MakeServer,
) -> None:
    server = await make_server()
    with pytest.raises(InvalidStatus) as anonymous:
        async with connect(server.ws_url, proxy=None, open_timeout=10):
            pass
    assert anonymous.value.response.status_code == 403
    with pytest.raises(InvalidStatus):
        async with connect(
            server.ws_url,
            proxy=None,
            open_timeout=10,
            origin="http://evil.example",  # type: ignore[arg-type]
            additional_headers=server.headers,
        ):
            pass
    async with connect(
        server.ws_url, proxy=None, open_timeout=10, additional_headers=server.headers
    ) as ws:
        assert ws.protocol.state.name == "OPEN"


def _code(secret: str, clock: Clock, offset_s: int = 0) -> str:
    import pyotp

    return str(pyotp.TOTP(secret).at(clock.now // S + offset_s))


async def test_a_second_factor_is_asked_at_login_and_a_used_code_is_refused(site: Site) -> None:
    async with site.browser() as browser:
        csrf = await login(browser)
        headers = {CSRF_HEADER: csrf}
        setup = (await browser.post("/api/v1/auth/totp", headers=headers)).json()
        assert setup["uri"].startswith("otpauth://totp/")
        wrong = await browser.post(
            "/api/v1/auth/totp/confirm", json={"code": "000000"}, headers=headers
        )
        assert wrong.status_code == 403
        code = _code(setup["secret"], site.clock)
        confirmed = await browser.post(
            "/api/v1/auth/totp/confirm", json={"code": code}, headers=headers
        )
        assert confirmed.status_code == 204
    async with site.browser() as other:
        body = {"name": "ada", "password": PASSWORD}
        without = await other.post("/api/v1/auth/login", json=body)
        replayed = await other.post("/api/v1/auth/login", json={**body, "code": code})
        site.clock.now += 30 * S
        fresh = _code(setup["secret"], site.clock)
        accepted = await other.post("/api/v1/auth/login", json={**body, "code": fresh})
        again = await other.post("/api/v1/auth/login", json={**body, "code": fresh})
    assert (without.status_code, replayed.status_code) == (401, 401)
    assert "second factor" in replayed.json()["error"]["message"]
    assert accepted.status_code == 200, accepted.text
    assert again.status_code == 401  # the same code twice: a replay


async def test_when_required_an_admin_without_a_second_factor_may_only_set_one_up(
    make_stack: MakeStack,
) -> None:
    clock = Clock()
    auth = Auth(None, settings=SecuritySection(mfa="required"), clock=clock)
    stack = await make_stack(auth=auth)
    await auth.add_user("root", PASSWORD, role="admin")
    await auth.add_user("ada", PASSWORD, role="operator")
    transport = httpx.ASGITransport(app=stack.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as browser:
        csrf = await login(browser, "root")
        headers = {CSRF_HEADER: csrf}
        me = (await browser.get("/api/v1/auth/me")).json()
        assert me["mfa_pending"] is True
        refused = await browser.get("/api/v1/users")
        assert refused.status_code == 403
        assert "second factor" in refused.json()["error"]["message"]
        secret = (await browser.post("/api/v1/auth/totp", headers=headers)).json()["secret"]
        code = _code(secret, clock)
        await browser.post("/api/v1/auth/totp/confirm", json={"code": code}, headers=headers)
        assert (await browser.get("/api/v1/users")).status_code == 200
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as operator:
        await login(operator, "ada")  # an operator needs none
        assert (await operator.get("/api/v1/tags")).status_code == 200
