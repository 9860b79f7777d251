"""The security store's SQLite file: how passwords are kept, which are refused, sessions,
tokens, the secret key. What every backend must do (lockouts, last admin, first start, a
login seen by another server) is in tests/contract/test_security_backends.py."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from shopfloor.config.security import SecuritySection
from shopfloor.errors import ConfigError
from shopfloor.server.security import Auth, LoginRefused, PasswordRejected
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


def test_a_shared_mode_server_uses_the_given_key_and_never_generates_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(KEY_ENV, raising=False)
    with pytest.raises(ConfigError, match=r"secret_key_file.*historian\.shared.*same"):
        load_secret_key(tmp_path, shared=True)
    assert not (tmp_path / "secret.key").exists()
    key_file = tmp_path / "shared.key"
    key_file.write_text("k" * 40 + "\n")
    assert load_secret_key(tmp_path, key_file, shared=True) == b"k" * 40
    monkeypatch.setenv(KEY_ENV, "e" * 40)
    assert load_secret_key(tmp_path, shared=True) == b"e" * 40
