"""Every 403 is one ``access.denied`` entry naming who, what, when and from where; a 401 is
none (an anonymous audited write is its own action's entry); repeats of one refusal are
counted into a summary instead of flooding the log."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from shopfloor.model import PointBatch, now_ns
from shopfloor.server.api.auth import CSRF_HEADER
from shopfloor.server.api.edge_auth import install_edge_credentials
from shopfloor.server.ingest.credentials import EdgeCredentials, issue_credential
from shopfloor.server.security import AuditEntry, AuditLog, Auth
from shopfloor.server.security.denials import DenialCoalescer, Summary

from .conftest import MakeStack, RunningServer

MakeServer = Callable[..., Awaitable[RunningServer]]

PASSWORD = "a long enough passphrase"
MINE = "acme/plant-1/machining/mill-1/spindle_temp"
OTHER = "acme/plant-1/assembly/press-1/force"
DENIED = "access.denied"


class Monotonic:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Site:
    auth: Auth
    audit: AuditLog
    app: Any
    monotonic: Monotonic

    def client(self, headers: dict[str, str] | None = None) -> httpx.AsyncClient:
        transport = httpx.ASGITransport(app=self.app)
        return httpx.AsyncClient(transport=transport, base_url="http://t", headers=headers)

    async def token(self, name: str, role: str, user: str | None = None) -> tuple[str, str]:
        token, secret = await self.auth.create_token(
            name, role=role, owner="tests", expires_ns=None, user=user
        )
        return token.id, secret

    async def denials(self) -> list[AuditEntry]:
        return await self.audit.entries(action=DENIED)


@pytest.fixture
async def site(make_stack: MakeStack, tmp_path: Path) -> AsyncIterator[Site]:
    monotonic = Monotonic()
    audit = AuditLog(tmp_path / "audit.sqlite", monotonic=monotonic)
    await audit.start()
    auth = Auth(None)
    stack = await make_stack(auth=auth, audit=audit)
    await stack.ingest(PointBatch.from_points([(p, now_ns(), 1.0, 0) for p in (MINE, OTHER)]))
    await auth.add_user("vic", PASSWORD, role="viewer")
    await auth.add_user("ada", PASSWORD, role="viewer", sites=["acme/plant-1/machining"])
    yield Site(auth, audit, stack.app, monotonic)
    await audit.close()


async def test_each_refused_request_is_one_entry_naming_who_what_and_where(site: Site) -> None:
    token_id, secret = await site.token("etl", "read")
    async with site.client() as vic, site.client({"Authorization": f"Bearer {secret}"}) as etl:
        login = await vic.post("/api/v1/auth/login", json={"name": "vic", "password": PASSWORD})
        csrf = login.json()["csrf"]
        role = await vic.get("/api/v1/users")
        no_csrf = await vic.post(
            "/api/v1/users", json={"name": "x", "password": PASSWORD * 2, "role": "admin"}
        )
        scope = await etl.delete("/api/v1/tokens/abc")
        allowed = await vic.get("/api/v1/tags")
        logout = await vic.post("/api/v1/auth/logout", headers={CSRF_HEADER: csrf})
    assert [a.status_code for a in (role, no_csrf, scope, allowed, logout)] == [
        403,
        403,
        403,
        200,
        204,
    ]

    denied = await site.denials()
    assert [(e.user, e.detail["method"], e.detail["route"]) for e in denied] == [
        ("vic", "GET", "/api/v1/users"),
        ("vic", "POST", "/api/v1/users"),
        ("token:etl", "DELETE", "/api/v1/tokens/{token_id}"),
    ]
    first, second, third = denied
    assert first.outcome.value == "rejected"
    assert first.client == "127.0.0.1"
    assert first.target == "/api/v1/users"
    assert first.ts_ns > 0
    assert (first.detail["kind"], first.detail["role"], first.detail["status"]) == (
        "session",
        "viewer",
        403,
    )
    assert "lacks the permission 'admin'" in first.detail["error"]["message"]
    # a refused audited write is entered once, as a denial naming what it tried
    assert second.detail["action"] == "user.create"
    assert second.detail["error"]["field"] == CSRF_HEADER
    assert not await site.audit.entries(action="user.create")
    assert third.detail["token"] == token_id
    assert third.detail["path"] == "/api/v1/tokens/abc"
    assert PASSWORD not in str([e.detail for e in await site.audit.entries()])


async def test_a_401_is_no_denial_and_a_flood_of_anonymous_writes_is_counted_not_written(
    site: Site,
) -> None:
    async with site.client() as anonymous, site.client({"Authorization": "Bearer sft_no"}) as bad:
        assert (await anonymous.get("/api/v1/users")).status_code == 401
        assert (await bad.get("/api/v1/users")).status_code == 401
        assert await site.audit.entries() == []  # an anonymous read: nothing at all
        for i in range(30):  # an audited write, refused for want of a credential
            client = anonymous if i % 2 else bad
            assert (await client.delete(f"/api/v1/tokens/t{i % 3}")).status_code == 401
        # the first is entered at once under its action, the repeats are only counted
        (first,) = await site.audit.entries()
        assert (first.user, first.action, first.target) == ("(unnamed)", "token.revoke", "t0")
        assert (first.outcome.value, first.client) == ("rejected", "127.0.0.1")
        assert first.detail["status"] == 401
        assert first.detail["error"]["field"] == "authorization"
        site.monotonic.now += 11  # the window is over: the next refusal writes the summary
        assert (await anonymous.delete("/api/v1/tokens/t9")).status_code == 401
    assert await site.denials() == []
    first, summary, again = await site.audit.entries()
    assert (summary.user, summary.action, summary.outcome.value) == (
        "(unnamed)",
        "token.revoke",
        "rejected",
    )
    assert summary.detail["repeats"] == 29  # none uncounted
    assert summary.detail["targets"] == ["t1", "t2", "t0"]
    assert (summary.detail["method"], summary.detail["status"]) == ("DELETE", 401)
    assert summary.detail["route"] == "/api/v1/tokens/{token_id}"
    assert again.target == "t9"


async def test_a_scoped_users_refusal_names_the_other_areas_tag(site: Site) -> None:
    token_id, secret = await site.token("ada-script", "read", user="ada")
    async with site.client({"Authorization": f"Bearer {secret}"}) as ada:
        mine = await ada.get(f"/api/v1/tags/{MINE}/series")
        other = await ada.get(f"/api/v1/tags/{OTHER}/series")
    assert (mine.status_code, other.status_code) == (200, 403)
    (entry,) = await site.denials()
    assert (entry.user, entry.target) == ("ada", OTHER)
    assert entry.detail["token"] == token_id
    assert entry.detail["route"] == "/api/v1/tags/{path:path}/series"
    assert OTHER in entry.detail["error"]["message"]


async def test_a_flood_of_one_denial_is_counted_into_one_summary(site: Site) -> None:
    _, secret = await site.token("ada-script", "read", user="ada")
    async with site.client({"Authorization": f"Bearer {secret}"}) as ada:

        async def refused(path: str) -> None:
            assert (await ada.get(f"/api/v1/tags/{path}/series")).status_code == 403

        for i in range(50):
            await refused(f"{OTHER}-{i % 3}")
        assert len(await site.denials()) == 1  # the first, written at once
        site.monotonic.now += 11  # the window is over: the next denial writes the summary
        await refused(OTHER)
        for _ in range(4):
            await refused(OTHER)
    first, summary, again = await site.denials()
    assert first.target == f"{OTHER}-0"
    assert summary.detail["repeats"] == 49
    assert summary.detail["targets"] == [f"{OTHER}-1", f"{OTHER}-2", f"{OTHER}-0"]
    assert summary.detail["route"] == "/api/v1/tags/{path:path}/series"
    assert summary.detail["first_ns"] <= summary.detail["last_ns"]
    assert again.target == OTHER
    await site.audit.close()  # the 4 repeats still counted are written at close
    reopened = AuditLog(site.audit.path)
    await reopened.start()
    last = (await reopened.entries(action=DENIED))[-1]
    await reopened.close()
    assert last.detail["repeats"] == 4
    assert last.target == OTHER


async def test_a_websocket_refused_for_its_role_or_origin_is_entered_an_anonymous_one_not(
    make_server: MakeServer, tmp_path: Path
) -> None:
    audit = AuditLog(tmp_path / "audit.sqlite")
    await audit.start()
    auth = Auth(None)
    server = await make_server(auth=auth, audit=audit)
    _, ingest = await auth.create_token("edge", role="ingest", owner="t", expires_ns=None)
    _, reader = await auth.create_token("screen", role="read", owner="t", expires_ns=None)
    attempts: list[dict[str, Any]] = [
        {},  # no credential: a 401's worth, not entered
        {"additional_headers": {"Authorization": f"Bearer {ingest}"}},
        {"additional_headers": {"Authorization": f"Bearer {reader}"}, "origin": "http://evil.x"},
    ]
    for kwargs in attempts:
        with pytest.raises(InvalidStatus) as refused:
            async with connect(server.ws_url, proxy=None, open_timeout=10, **kwargs):
                pass
        assert refused.value.response.status_code == 403
    entries = await audit.entries(action=DENIED)
    await audit.close()
    assert [(e.user, e.detail["method"], e.detail["route"]) for e in entries] == [
        ("token:edge", "WEBSOCKET", "/api/v1/ws"),
        ("token:screen", "WEBSOCKET", "/api/v1/ws"),
    ]
    assert "lacks the permission 'read'" in entries[0].detail["error"]["message"]
    assert "Origin" in entries[1].detail["error"]["message"]
    assert entries[1].client == "127.0.0.1"


async def test_an_edge_speaking_for_another_edge_is_entered_under_its_own_id(
    site: Site, tmp_path: Path
) -> None:
    path = tmp_path / "edge-credentials.txt"
    token = issue_credential(path, "edge-a")
    credentials = EdgeCredentials(path)
    credentials.load()
    install_edge_credentials(site.app, credentials)
    async with site.client({"Authorization": f"Bearer {token}"}) as edge:
        answer = await edge.put("/api/v1/edges/edge-b/status", json={})
    assert answer.status_code == 403
    (entry,) = await site.denials()
    assert entry.user == "edge:edge-a"
    assert entry.detail["route"] == "/api/v1/edges/{edge_id}/status"
    assert "edge-b" in entry.detail["error"]["message"]


def test_the_remembered_denials_are_bounded_and_a_pushed_out_one_is_summarised() -> None:
    clock = Monotonic()
    gate = DenialCoalescer(10.0, max_keys=2, monotonic=clock)

    def admit(key: str, target: str = "") -> tuple[bool, list[Summary]]:
        return gate.admit(
            (key,), action=DENIED, user=key, client="c", target=target, ts_ns=1, base={}
        )

    assert admit("a") == (True, [])
    assert admit("a", "x") == (False, [])
    assert admit("b") == (True, [])
    written, due = admit("c")  # full: a's window is summarised early, its count kept
    assert written
    assert [(s.user, s.target, s.detail["repeats"]) for s in due] == [("a", "x", 1)]
    assert admit("c") == (False, [])
    clock.now += 10
    written, due = admit("c")  # b's and c's windows are over: c is written again
    assert written
    assert [(s.user, s.detail["repeats"]) for s in due] == [("c", 1)]
    assert gate.drain() == []
