"""`shopfloor edge` under systemd (Type=notify): READY once its connectors run, STOPPING
on the way out, the watchdog fed meanwhile; a real unix datagram socket stands in for
systemd's, a real simulator connector for the devices."""

from __future__ import annotations

import asyncio
import os
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from shopfloor.config import load_edge_config
from shopfloor.edge.agent import run_edge
from shopfloor.testing.processes import free_port

RECV_TIMEOUT_S = 20.0  # a guard against a hang, not a measurement


@pytest.fixture
def listener() -> Iterator[tuple[str, socket.socket]]:
    with tempfile.TemporaryDirectory(prefix="sdn-") as folder:
        path = os.path.join(folder, "notify")
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.bind(path)
            sock.settimeout(RECV_TIMEOUT_S)
            yield path, sock


def _next_other_than_ping(sock: socket.socket) -> str:
    while (message := sock.recv(4096).decode()) == "WATCHDOG=1":
        pass
    return message


async def test_edge_tells_systemd_it_is_ready_and_stopping(
    tmp_path: Path, listener: tuple[str, socket.socket], monkeypatch: pytest.MonkeyPatch
) -> None:
    path, sock = listener
    config = tmp_path / "edge.toml"
    # nobody listens on the uplink's port: the edge is up all the same, keeping values
    config.write_text(
        f'[edge]\nid = "edge-n"\ndata_dir = "{tmp_path / "edge"}"\n'
        f'[uplink]\nurl = "http://127.0.0.1:{free_port()}"\n'
        "[health]\nenabled = false\n"
        '[[connectors]]\nkind = "simulator"\nname = "sim"\n'
    )
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    monkeypatch.setenv("WATCHDOG_USEC", "200000")
    stop = asyncio.Event()
    edge = asyncio.create_task(run_edge(load_edge_config(config), stop=stop))
    try:
        ready = await asyncio.to_thread(_next_other_than_ping, sock)
        assert ready == "READY=1\nSTATUS=edge edge-n: 1 connector(s)"
        assert "NOTIFY_SOCKET" not in os.environ  # its children do not inherit it
        assert await asyncio.to_thread(sock.recv, 4096) == b"WATCHDOG=1"
    finally:
        stop.set()
        await edge
    assert await asyncio.to_thread(_next_other_than_ping, sock) == "STOPPING=1"
