"""`shopfloor ingest` under systemd (Type=notify): READY once its database is open and its
broker client started, STOPPING on the way out; real PostgreSQL and Mosquitto, a real unix
datagram socket standing in for systemd's."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from shopfloor.config import load_config
from shopfloor.server.worker import run_worker
from shopfloor.testing.mosquitto import Mosquitto
from shopfloor.testing.sdnotify import NotifyListener


async def test_worker_tells_systemd_it_is_ready_and_stopping(
    tmp_path: Path,
    dsn: str,
    mosquitto: Mosquitto,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config = tmp_path / "platform.toml"
    config.write_text(
        f'[historian]\nkind = "postgres"\ndsn = "{dsn}"\nshared = true\n'
        f'[ingest.mqtt]\nport = {mosquitto.port}\nshared_group = "ingest"\n'
        'session_expiry = "0s"\n'
    )
    with NotifyListener.in_temporary_folder() as listener:
        monkeypatch.setenv("NOTIFY_SOCKET", listener.path)
        stop = asyncio.Event()
        worker = asyncio.create_task(run_worker(load_config(config), client_id="w-n", stop=stop))
        try:
            got = await asyncio.to_thread(listener.wait_for, bool, "READY=1")
            assert got == ["READY=1\nSTATUS=ingest worker w-n"]
        finally:
            stop.set()
            await worker
        got = await asyncio.to_thread(listener.wait_for, lambda m: "STOPPING=1" in m, "STOPPING")
    assert got == ["READY=1\nSTATUS=ingest worker w-n", "STOPPING=1"]
