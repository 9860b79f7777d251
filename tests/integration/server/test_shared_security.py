"""Two API servers on one shared PostgreSQL answer any request: a browser logged in on one
goes on through the other (session cookie and CSRF token), an API token made on one works
on the other until it is revoked, and the audit log of both is one valid chain. The CLI
given their configuration manages the same users.

Real `Server`s (each with its own data folder, as on two hosts) serving HTTP on
127.0.0.1, a throwaway PostgreSQL, the secret key given to both as the docs say.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from shopfloor.cli import app
from shopfloor.config import ShopfloorConfig
from shopfloor.server.api.auth import CSRF_HEADER
from shopfloor.server.app import Server
from shopfloor.server.security import Auth
from shopfloor.server.security.pg_audit import PgAuditStore
from shopfloor.server.security.pg_store import PgSecurityStore
from shopfloor.server.security.secret import KEY_ENV

PASSWORD = "correct horse battery staple"


def _config(data: Path, *, dsn: str, key: Path) -> ShopfloorConfig:
    return ShopfloorConfig.model_validate(
        {
            "server": {"port": 0, "data_dir": str(data)},
            "historian": {"kind": "postgres", "dsn": dsn, "shared": True},
            "security": {"secret_key_file": str(key)},
        }
    ).resolve_paths(data)


@asynccontextmanager
async def _serving(config: ShopfloorConfig) -> AsyncIterator[Server]:
    server = Server(config)
    await server.start()
    stop, ready = asyncio.Event(), asyncio.Event()
    serving = asyncio.create_task(server.serve(stop, ready=ready))
    try:
        await asyncio.wait_for(ready.wait(), 30)
        yield server
    finally:
        stop.set()
        await serving
        await server.close()


async def test_a_session_and_a_token_made_on_one_server_work_on_the_other(
    tmp_path: Path, dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(KEY_ENV, raising=False)
    key = tmp_path / "secret.key"
    key.write_text("a-shared-key-for-both-api-servers-of-this-test\n")
    async with AsyncExitStack() as stack:
        a, b = [
            await stack.enter_async_context(_serving(_config(tmp_path / name, dsn=dsn, key=key)))
            for name in ("a", "b")
        ]
        await a.auth.add_user("ada", PASSWORD, role="admin")
        on_a = await stack.enter_async_context(httpx.AsyncClient(base_url=a.url, timeout=30))
        on_b = await stack.enter_async_context(httpx.AsyncClient(base_url=b.url, timeout=30))

        login = await on_a.post("/api/v1/auth/login", json={"name": "ada", "password": PASSWORD})
        assert login.status_code == 200, login.text
        on_b.cookies = on_a.cookies  # the load balancer sends the browser's next request to B
        csrf = {CSRF_HEADER: on_a.cookies["shopfloor_csrf"]}
        me = await on_b.get("/api/v1/auth/me")
        assert me.status_code == 200, me.text
        assert me.json()["name"] == "ada"
        without = await on_b.post("/api/v1/tokens", json={"name": "grafana", "role": "read"})
        assert without.status_code == 403, without.text  # CSRF is still checked on B ...
        made = await on_a.post(
            "/api/v1/tokens", json={"name": "grafana", "role": "read"}, headers=csrf
        )
        assert made.status_code == 201, made.text
        # ... and the token B derives from the session is A's: the key is shared
        made_on_b = await on_b.post(
            "/api/v1/tokens", json={"name": "robot", "role": "read"}, headers=csrf
        )
        assert made_on_b.status_code == 201, made_on_b.text

        bearer = {"Authorization": f"Bearer {made.json()['secret']}"}
        assert (await on_b.get("/api/v1/auth/me", headers=bearer)).status_code == 200
        revoked = await on_a.delete(f"/api/v1/tokens/{made.json()['token']['id']}", headers=csrf)
        assert revoked.status_code == 200, revoked.text
        assert (await on_b.get("/api/v1/auth/me", headers=bearer)).status_code == 401

        logout = await on_b.post("/api/v1/auth/logout", headers=csrf)
        assert logout.status_code in (200, 204), logout.text
        assert (await on_a.get("/api/v1/auth/me")).status_code == 401  # ended everywhere

        # one audit log, one chain: what A and B recorded, in order, verified by either
        again = await on_b.post("/api/v1/auth/login", json={"name": "ada", "password": PASSWORD})
        assert again.status_code == 200, again.text
        on_a.cookies = on_b.cookies
        listed = await on_a.get("/api/v1/audit")
        assert listed.status_code == 200, listed.text
        entries = listed.json()
        assert [e["seq"] for e in entries] == list(range(1, len(entries) + 1))
        done = [e["action"] for e in entries if e["outcome"] == "ok"]
        assert [d for d in done if d != "auth.logout"] == [
            "auth.login",  # on A
            "token.create",  # on A
            "token.create",  # on B
            "token.revoke",  # on A
            "auth.login",  # on B
        ]
        for client in (on_a, on_b):
            chain = await client.get("/api/v1/audit/verify")
            assert chain.status_code == 200, chain.text
            assert chain.json()["intact"] is True
            assert chain.json()["rows"] == len(entries)


async def test_the_cli_given_the_configuration_manages_the_shared_users(
    tmp_path: Path, dsn: str
) -> None:
    config = tmp_path / "platform.toml"
    config.write_text(f'[historian]\nkind = "postgres"\ndsn = "{dsn}"\nshared = true\n')
    password = tmp_path / "pw"
    password.write_text(PASSWORD + "\n")
    runner = CliRunner()

    def run(*args: str) -> tuple[int, str]:
        result = runner.invoke(app, [*args, "--config", str(config)])
        return result.exit_code, result.stdout

    assert run("users", "add", "ada", "--role", "admin", "--password-file", str(password))[0] == 0
    code, secret = run("tokens", "create", "etl", "--role", "read")
    assert code == 0
    assert "ada\tadmin\tenabled" in run("users", "list")[1]
    both = runner.invoke(app, ["users", "list", "--config", str(config), "--data-dir", "d"])
    assert both.exit_code == 2

    # what every API server of this configuration now sees
    auth = Auth(None, store=lambda: PgSecurityStore(dsn, "shopfloor_security"))
    await auth.start()
    try:
        principal, _ = await auth.login("ada", PASSWORD, client="test")
        assert principal.role == "admin"
        assert await auth.token_principal(secret.strip()) is not None
    finally:
        await auth.close()
    audit = PgAuditStore(dsn, "shopfloor_security")
    try:
        entries = audit.entries()
    finally:
        audit.close()
    assert [(e.action, e.target, e.user.startswith("cli")) for e in entries] == [
        ("user.create", "ada", True),
        ("token.create", "etl", True),
    ]
    assert not (tmp_path / "shopfloor-data" / "security.sqlite").exists()
