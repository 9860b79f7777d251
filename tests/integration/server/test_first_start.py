"""First start of a real server: one admin with a password shown once on stderr (never
logged), a secret key file of mode 0600, and no start with a key anybody can guess."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest

from shopfloor.config import ShopfloorConfig
from shopfloor.errors import ConfigError
from shopfloor.server.app import Server
from shopfloor.server.security.secret import KEY_ENV


def _config(data: Path, **security: object) -> ShopfloorConfig:
    return ShopfloorConfig.model_validate(
        {"server": {"port": 0, "data_dir": str(data)}, "security": security}
    ).resolve_paths(data)


async def test_first_start_shows_the_admin_password_once_and_never_logs_it(
    tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(KEY_ENV, raising=False)
    caplog.set_level(logging.DEBUG)
    data = tmp_path / "data"
    for _ in range(2):
        server = Server(_config(data))
        await server.start()
        await server.close()
    shown = capfd.readouterr().err
    passwords = re.findall(r"the password\s+(\S+)", shown)
    assert len(passwords) == 1, shown  # the second start creates no one
    (password,) = passwords
    assert password not in caplog.text
    assert (data / "secret.key").stat().st_mode & 0o777 == 0o600
    server = Server(_config(data))
    await server.start()
    try:
        principal, _ = await server.auth.login("admin", password, client="a")
        assert principal.role == "admin"
    finally:
        await server.close()
    assert password.encode() not in (data / "security.sqlite").read_bytes()


def test_the_server_refuses_a_short_or_example_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(KEY_ENV, raising=False)
    key = tmp_path / "key"
    key.write_text("0123456789abcdef0123456789abcdef\n")
    with pytest.raises(ConfigError, match="example"):
        Server(_config(tmp_path / "data", secret_key_file=str(key)))
    monkeypatch.setenv(KEY_ENV, "short")
    with pytest.raises(ConfigError, match="too short"):
        Server(_config(tmp_path / "data"))
