"""A user's own language: stored with the account, shown and set on /api/v1/auth/me
(validated, audited), and the language the server renders the pages in."""

from __future__ import annotations

import re
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from shopfloor.server.api.auth import install_auth
from shopfloor.server.security import AuditLog, Auth
from shopfloor.server.security.store import LOCALES, SecurityStore
from shopfloor.server.web import catalogue, router
from shopfloor.testing.auth import grant

from .conftest import MakeStack

PASSWORD = "a long enough passphrase"


@pytest.fixture
async def audited(
    make_stack: MakeStack, tmp_path: Path
) -> AsyncIterator[tuple[Auth, AuditLog, FastAPI]]:
    auth = Auth(None)
    audit = AuditLog(tmp_path / "audit.sqlite")
    await audit.start()
    stack = await make_stack(auth=auth, audit=audit)
    await auth.add_user("lin", PASSWORD, role="viewer")
    yield auth, audit, stack.app
    await audit.close()


def _browser(app: FastAPI) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t")


async def test_a_user_sets_and_sees_their_language_and_the_change_is_audited(
    audited: tuple[Auth, AuditLog, FastAPI],
) -> None:
    auth, audit, app = audited
    async with _browser(app) as browser:
        login = await browser.post("/api/v1/auth/login", json={"name": "lin", "password": PASSWORD})
        csrf = {"X-CSRF-Token": login.json()["csrf"]}
        assert login.json()["locale"] is None
        changed = await browser.patch("/api/v1/auth/me", json={"locale": "zh-CN"}, headers=csrf)
        me = (await browser.get("/api/v1/auth/me")).json()
        without_csrf = await browser.patch("/api/v1/auth/me", json={"locale": "en"})
    assert changed.status_code == 200, changed.text
    assert changed.json()["locale"] == "zh-CN"
    assert me["locale"] == "zh-CN"
    assert without_csrf.status_code == 403
    stored = await auth.user("lin")
    assert stored is not None
    assert stored.locale == "zh-CN"
    entries = [(e.user, e.action, e.outcome.value, e.detail) for e in await audit.entries()]
    assert ("lin", "user.locale", "ok", {"before": None, "locale": "zh-CN"}) in entries


@pytest.mark.parametrize("body", [{"locale": "fr"}, {"locale": "zh"}, {"locale": 5}, {}])
async def test_an_unknown_language_is_422_naming_locale_and_changes_nothing(
    audited: tuple[Auth, AuditLog, FastAPI], body: dict[str, object]
) -> None:
    auth, _audit, app = audited
    async with _browser(app) as browser:
        login = await browser.post("/api/v1/auth/login", json={"name": "lin", "password": PASSWORD})
        csrf = {"X-CSRF-Token": login.json()["csrf"]}
        answer = await browser.patch("/api/v1/auth/me", json=body, headers=csrf)
    assert answer.status_code == 422
    assert "locale" in str(answer.json()["error"]["field"])
    stored = await auth.user("lin")
    assert stored is not None
    assert stored.locale is None


async def test_null_returns_the_choice_to_the_browser(
    audited: tuple[Auth, AuditLog, FastAPI],
) -> None:
    auth, _audit, app = audited
    await auth.set_locale("lin", "zh-CN")
    async with _browser(app) as browser:
        login = await browser.post("/api/v1/auth/login", json={"name": "lin", "password": PASSWORD})
        assert login.json()["locale"] == "zh-CN"
        csrf = {"X-CSRF-Token": login.json()["csrf"]}
        answer = await browser.patch("/api/v1/auth/me", json={"locale": None}, headers=csrf)
    assert answer.json()["locale"] is None


async def test_an_api_token_of_no_user_has_no_language_to_set(
    audited: tuple[Auth, AuditLog, FastAPI],
) -> None:
    _auth, _audit, app = audited
    async with _browser(app) as client:
        answer = await client.patch(
            "/api/v1/auth/me", json={"locale": "en"}, headers=grant(app, role="viewer")
        )
    assert answer.status_code == 403


def test_a_security_file_from_before_the_language_gets_the_column(tmp_path: Path) -> None:
    path = tmp_path / "security.sqlite"
    old = sqlite3.connect(path)
    old.execute(
        "CREATE TABLE users (name TEXT PRIMARY KEY, hash TEXT NOT NULL, role TEXT NOT NULL,"
        " sites TEXT NOT NULL, disabled INTEGER NOT NULL DEFAULT 0, created_ns INTEGER NOT NULL,"
        " failures INTEGER NOT NULL DEFAULT 0, lockouts INTEGER NOT NULL DEFAULT 0,"
        " locked_until_ns INTEGER NOT NULL DEFAULT 0, totp_secret TEXT,"
        " totp_enabled INTEGER NOT NULL DEFAULT 0, totp_step INTEGER NOT NULL DEFAULT 0)"
    )
    old.execute(
        "INSERT INTO users (name, hash, role, sites, created_ns)"
        " VALUES ('ada', 'h', 'viewer', '[]', 1)"
    )
    old.commit()
    old.close()
    store = SecurityStore(path)
    try:
        before = store.user("ada")
        assert before is not None
        assert before.locale is None
        assert store.set_locale("ada", "zh-CN").locale == "zh-CN"
    finally:
        store.close()
    again = SecurityStore(path)  # opening it again adds nothing twice
    try:
        found = again.user("ada")
        assert found is not None
        assert found.locale == "zh-CN"
    finally:
        again.close()


def test_the_languages_a_user_may_choose_are_the_dashboard_s() -> None:
    assert list(LOCALES) == catalogue.available_locales()


async def test_pages_render_in_the_user_s_language_after_lang_and_before_cookie_and_browser() -> (
    None
):
    app = FastAPI()
    app.include_router(router)
    install_auth(app, Auth(None))
    token = grant(app, role="viewer", user="lin")
    app.state.auth.opened().set_locale("lin", "zh-CN")
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t", headers=token) as c:
        plain = (await c.get("/")).text
        browser_en = (await c.get("/", headers={"Accept-Language": "en"})).text
        c.cookies.set(catalogue.LANG_COOKIE, "en")
        cookie_en = (await c.get("/")).text
        asked_en = (await c.get("/?lang=en")).text
    for page in (plain, cookie_en, browser_en):
        assert re.search(r'<html lang="zh-CN"', page)
        assert "data-user-locale" not in page  # a token is no browser session: no menu to save
    assert '<html lang="en"' in asked_en
