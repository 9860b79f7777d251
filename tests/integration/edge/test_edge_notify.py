"""`shopfloor edge` under systemd (Type=notify): READY once its connectors run, STOPPING
on the way out, the watchdog fed meanwhile; a real unix datagram socket stands in for
systemd's, a real simulator connector for the devices."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from shopfloor.config import load_edge_config
from shopfloor.edge.agent import run_edge
from shopfloor.testing.processes import free_port
from shopfloor.testing.sdnotify import NotifyListener

READY = "READY=1\nSTATUS=edge edge-n: 1 connector(s)"


async def test_edge_tells_systemd_it_is_ready_and_stopping(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "edge.toml"
    # nobody listens on the uplink's port: the edge is up all the same, keeping values
    config.write_text(
        f'[edge]\nid = "edge-n"\ndata_dir = "{tmp_path / "edge"}"\n'
        f'[uplink]\nurl = "http://127.0.0.1:{free_port()}"\n'
        "[health]\nenabled = false\n"
        '[[connectors]]\nkind = "simulator"\nname = "sim"\n'
    )
    with NotifyListener.in_temporary_folder() as listener:
        monkeypatch.setenv("NOTIFY_SOCKET", listener.path)
        monkeypatch.setenv("WATCHDOG_USEC", "200000")
        stop = asyncio.Event()
        edge = asyncio.create_task(run_edge(load_edge_config(config), stop=stop))
        try:
            await asyncio.to_thread(listener.wait_for, lambda m: READY in m, "READY=1")
            assert "NOTIFY_SOCKET" not in os.environ  # its children do not inherit it
            await asyncio.to_thread(
                listener.wait_for,
                lambda m: "WATCHDOG=1" in m[m.index(READY) :],
                "WATCHDOG=1 after READY=1",
            )
        finally:
            stop.set()
            await edge
        got = await asyncio.to_thread(listener.wait_for, lambda m: "STOPPING=1" in m, "STOPPING")
    assert set(got) == {READY, "WATCHDOG=1", "STOPPING=1"}
