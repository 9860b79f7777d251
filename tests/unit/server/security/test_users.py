"""The security store: how passwords are kept, which are refused, lockouts, sessions, tokens."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from shopfloor.config.security import SecuritySection
from shopfloor.errors import ConfigError
from shopfloor.server.security import Auth, LoginRefused, PasswordRejected, SecurityError
from shopfloor.server.security.secret import KEY_ENV, load_secret_key

S = 1_000_000_000
PASSWORD = "correct horse battery staple"


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000 * S

    def __call__(self) -> int:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def auth(tmp_path: Path, clock: Clock) -> AsyncIterator[Auth]:
    settings = SecuritySection(lockout_threshold=3, lockout_base_s=10, lockout_max_s=60)
    service = Auth(tmp_path / "security.sqlite", settings=settings, clock=clock)
    await service.start()
    yield service
    await service.close()


async def test_a_password_is_stored_as_an_argon2id_hash_never_as_given(
    auth: Auth, tmp_path: Path
) -> None:
    await auth.add_user("ada", PASSWORD, role="operator")
    await auth.close()
    raw = (tmp_path / "security.sqlite").read_bytes()
    raw += (
        (tmp_path / "security.sqlite-wal").read_bytes()
        if (tmp_path / "security.sqlite-wal").exists()
        else b""
    )
    assert PASSWORD.encode() not in raw
    with sqlite3.connect(tmp_path / "security.sqlite") as con:
        (stored,) = con.execute("SELECT hash FROM users WHERE name = 'ada'").fetchone()
    assert stored.startswith("$argon2id$")


@pytest.mark.parametrize("password", ["password1234", "qwertyuiop", "Iloveyou123", "short"])
async def test_a_common_or_short_password_is_refused(auth: Auth, password: str) -> None:
    with pytest.raises(PasswordRejected, match="password"):
        await auth.add_user("ada", password, role="viewer")
    assert await auth.user("ada") is None


async def test_a_password_holding_the_user_s_name_is_refused(auth: Auth) -> None:
    with pytest.raises(PasswordRejected, match="name"):
        await auth.add_user("grace", "grace-on-the-line-7", role="viewer")
    # a two-letter name turns up by chance in random passwords: not a reason to refuse one
    await auth.add_user("li", "Qx7-olive-kiln-harbour", role="viewer")
    assert await auth.user("li") is not None


async def test_login_opens_a_new_session_each_time(auth: Auth) -> None:
    await auth.add_user("ada", PASSWORD, role="operator")
    first, s1 = await auth.login("ada", PASSWORD, client="10.0.0.1")
    _, s2 = await auth.login("ada", PASSWORD, client="10.0.0.1")
    assert s1 != s2
    assert first.name == "ada"
    assert first.role == "operator"
    assert first.csrf
    principal = await auth.session_principal(s1)
    assert principal is not None
    assert principal.csrf == first.csrf


async def test_lockout_grows_and_always_ends_even_for_the_last_admin(
    auth: Auth, clock: Clock
) -> None:
    await auth.add_user("root", PASSWORD, role="admin")

    async def fail(times: int) -> LoginRefused:
        refused: LoginRefused | None = None
        for _ in range(times):
            with pytest.raises(LoginRefused) as caught:
                await auth.login("root", "wrong password", client="10.0.0.9")
            refused = caught.value
        assert refused is not None
        return refused

    assert (await fail(2)).status == 401
    first = await fail(1)
    assert first.status == 429
    assert first.retry_after_s == 10
    with pytest.raises(LoginRefused) as locked:  # the right password does not help now
        await auth.login("root", PASSWORD, client="10.0.0.9")
    assert locked.value.status == 429
    clock.now += 11 * S
    second = await fail(3)
    assert second.retry_after_s == 20  # the next lockout is longer
    for _ in range(4):  # ... up to the ceiling, never for good
        clock.now += 61 * S
        assert (await fail(3)).retry_after_s <= 60
    clock.now += 61 * S
    principal, _ = await auth.login("root", PASSWORD, client="10.0.0.9")
    assert principal.name == "root"


async def test_logins_beyond_the_rate_of_an_address_are_refused(tmp_path: Path) -> None:
    auth = Auth(None, settings=SecuritySection(login_rate_per_minute=3))
    await auth.add_user("ada", PASSWORD, role="viewer")
    for _ in range(3):
        await auth.login("ada", PASSWORD, client="10.0.0.1")
    with pytest.raises(LoginRefused) as refused:
        await auth.login("ada", PASSWORD, client="10.0.0.1")
    assert refused.value.status == 429
    await auth.login("ada", PASSWORD, client="10.0.0.2")  # another address is not slowed
    await auth.close()


async def test_sessions_end_when_idle_too_long_or_too_old(tmp_path: Path, clock: Clock) -> None:
    settings = SecuritySection(session_idle_s=100, session_absolute_s=250)
    auth = Auth(None, settings=settings, clock=clock)
    await auth.add_user("ada", PASSWORD, role="viewer")
    _, idle = await auth.login("ada", PASSWORD, client="a")
    _, busy = await auth.login("ada", PASSWORD, client="a")
    for _ in range(4):  # the busy one is used every 60 s
        clock.now += 60 * S
        assert await auth.session_principal(busy) is not None
    assert await auth.session_principal(idle) is None
    clock.now += 20 * S  # 260 s after the login: past the absolute limit
    assert await auth.session_principal(busy) is None
    await auth.close()


async def test_a_password_change_ends_the_other_sessions_and_disabling_ends_all(
    auth: Auth,
) -> None:
    await auth.add_user("root", PASSWORD, role="admin")
    await auth.add_user("ada", PASSWORD, role="operator")
    _, here = await auth.login("ada", PASSWORD, client="a")
    _, there = await auth.login("ada", PASSWORD, client="b")
    await auth.set_password("ada", "another good passphrase", keep_session=here)
    assert await auth.session_principal(here) is not None
    assert await auth.session_principal(there) is None
    await auth.update_user("ada", disabled=True)
    assert await auth.session_principal(here) is None
    with pytest.raises(LoginRefused):
        await auth.login("ada", "another good passphrase", client="a")


async def test_the_last_enabled_admin_cannot_be_demoted_or_disabled(auth: Auth) -> None:
    await auth.add_user("root", PASSWORD, role="admin")
    with pytest.raises(SecurityError, match="last enabled admin"):
        await auth.update_user("root", role="engineer")
    with pytest.raises(SecurityError, match="last enabled admin"):
        await auth.update_user("root", disabled=True)
    await auth.add_user("second", PASSWORD, role="admin")
    await auth.update_user("root", role="engineer")


async def test_tokens_are_stored_as_digests_and_refused_when_revoked_or_expired(
    auth: Auth, clock: Clock, tmp_path: Path
) -> None:
    token, secret = await auth.create_token("grafana", role="read", owner="x", expires_ns=None)
    _short, short_secret = await auth.create_token(
        "short", role="ingest", owner="x", expires_ns=clock.now + 60 * S
    )
    assert (await auth.token_principal(secret)) is not None
    listed = {t.id: t.public() for t in await auth.tokens()}
    assert secret not in repr(listed)
    with sqlite3.connect(tmp_path / "security.sqlite") as con:
        keys = [k for (k,) in con.execute("SELECT key FROM tokens")]
    assert secret not in keys
    assert short_secret not in keys
    await auth.revoke_token(token.id)
    assert await auth.token_principal(secret) is None
    assert await auth.token_principal(short_secret) is not None
    clock.now += 61 * S
    assert await auth.token_principal(short_secret) is None
    assert await auth.token_principal("sft_not_a_token") is None


async def test_first_start_creates_one_admin_and_never_again(auth: Auth) -> None:
    password = await auth.bootstrap_admin()
    assert password is not None
    assert len(password) >= 16
    principal, _ = await auth.login("admin", password, client="a")
    assert principal.role == "admin"
    assert await auth.bootstrap_admin() is None


def test_the_secret_key_is_generated_once_with_mode_0600(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(KEY_ENV, raising=False)
    key = load_secret_key(tmp_path)
    assert len(key) >= 32
    assert (tmp_path / "secret.key").stat().st_mode & 0o777 == 0o600
    assert load_secret_key(tmp_path) == key


@pytest.mark.parametrize(
    ("text", "problem"),
    [("", "empty"), ("too-short", "too short"), ("0123456789abcdef0123456789abcdef", "example")],
)
def test_an_empty_short_or_example_key_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str, problem: str
) -> None:
    monkeypatch.delenv(KEY_ENV, raising=False)
    key_file = tmp_path / "key"
    key_file.write_text(text)
    with pytest.raises(ConfigError, match=problem):
        load_secret_key(tmp_path, key_file)
    monkeypatch.setenv(KEY_ENV, text)
    with pytest.raises(ConfigError, match=problem):
        load_secret_key(tmp_path)
