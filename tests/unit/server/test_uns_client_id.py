"""Scaled out, each API server publishes to the UNS under a client id of its own: a broker
keeps one connection per id, so servers sharing ``uns.client_id`` would throw each other
off. A single server keeps the configured id."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from shopfloor.config import ShopfloorConfig
from shopfloor.config.uns import UnsSection
from shopfloor.server.app import Server
from shopfloor.server.uns import per_process
from shopfloor.testing.auth import shared_secret_key


def _server(tmp_path: Path, historian: dict[str, object]) -> Server:
    config = ShopfloorConfig.model_validate(
        {
            "server": {"port": 0, "data_dir": str(tmp_path / "data")},
            "historian": historian,
            "security": {"secret_key_file": str(shared_secret_key(tmp_path))},
            "uns": {"enabled": True, "client_id": "plant-uns"},
        }
    ).resolve_paths(tmp_path)
    return Server(config)


def test_a_scaled_out_server_publishes_under_an_id_of_its_own(tmp_path: Path) -> None:
    shared = _server(
        tmp_path, {"kind": "postgres", "dsn": "host=127.0.0.1 port=1 dbname=x", "shared": True}
    )
    assert shared.uns is not None
    assert shared.uns.settings.client_id == f"plant-uns-{socket.gethostname()}-{os.getpid()}"


def test_a_single_server_keeps_the_configured_id(tmp_path: Path) -> None:
    single = _server(tmp_path, {"kind": "duckdb", "path": str(tmp_path / "h.duckdb")})
    assert single.uns is not None
    assert single.uns.settings.client_id == "plant-uns"


@pytest.mark.parametrize("configured", ["u", "x" * 128])
def test_the_id_stays_within_mqtt_s_limit(configured: str) -> None:
    made = per_process(UnsSection(client_id=configured)).client_id
    assert len(made) <= 128
    assert made.endswith(f"-{os.getpid()}")
    assert made[0] in "ux"
