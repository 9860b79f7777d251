"""`shopfloor ingest` under systemd (Type=notify): READY once its database is open and its
broker client started, STOPPING on the way out; real PostgreSQL and Mosquitto, a real unix
datagram socket standing in for systemd's."""

from __future__ import annotations

import asyncio
import os
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from shopfloor.config import load_config
from shopfloor.server.worker import run_worker
from shopfloor.testing.mosquitto import Mosquitto
from shopfloor.testing.postgres import PostgresServer

RECV_TIMEOUT_S = 30.0  # a guard against a hang, not a measurement


@pytest.fixture
def listener() -> Iterator[tuple[str, socket.socket]]:
    with tempfile.TemporaryDirectory(prefix="sdn-") as folder:
        path = os.path.join(folder, "notify")
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.bind(path)
            sock.settimeout(RECV_TIMEOUT_S)
            yield path, sock


@pytest.fixture
def dsn(postgres_server: PostgresServer) -> Iterator[str]:
    dsn = postgres_server.create_database()
    yield dsn
    postgres_server.drop_database(dsn.rsplit("dbname=", 1)[1])


async def test_worker_tells_systemd_it_is_ready_and_stopping(
    tmp_path: Path,
    dsn: str,
    mosquitto: Mosquitto,
    listener: tuple[str, socket.socket],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    path, sock = listener
    config = tmp_path / "platform.toml"
    config.write_text(
        f'[historian]\nkind = "postgres"\ndsn = "{dsn}"\nshared = true\n'
        f'[ingest.mqtt]\nport = {mosquitto.port}\nshared_group = "ingest"\n'
        'session_expiry = "0s"\n'
    )
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    stop = asyncio.Event()
    worker = asyncio.create_task(run_worker(load_config(config), client_id="w-n", stop=stop))
    try:
        message = await asyncio.to_thread(sock.recv, 4096)
        assert message == b"READY=1\nSTATUS=ingest worker w-n"
    finally:
        stop.set()
        await worker
    assert await asyncio.to_thread(sock.recv, 4096) == b"STOPPING=1"
