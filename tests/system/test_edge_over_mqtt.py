"""`shopfloor edge` → Mosquitto → `shopfloor server`: the MQTT transport as a user wires it,
with the broker's password file and ACL from `shopfloor broker config` (no anonymous
clients; the edge may publish only its own topics)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from shopfloor.testing.mosquitto import Mosquitto
from shopfloor.testing.processes import free_port, shopfloor_process

pytestmark = pytest.mark.system


def test_edge_sends_through_a_broker_and_the_platform_commits_exactly_once(
    tmp_path: Path,
) -> None:
    files = tmp_path / "broker-files"
    command = ["broker", "config", "--out", str(files), "--edge", "edge-mqtt"]
    subprocess.run(
        [sys.executable, "-m", "shopfloor", *command],
        check=True,
        capture_output=True,
    )
    creds = files / "credentials"
    conf = (files / "shopfloor.conf").read_text().splitlines()
    with Mosquitto(tmp_path / "broker", extra_config=conf) as broker:
        port = free_port()
        (tmp_path / "server.toml").write_text(
            f'[server]\nport = {port}\ndata_dir = "data"\n'
            f"[ingest.mqtt]\nenabled = true\nport = {broker.port}\n"
            f'username = "shopfloor-platform"\n'
            f'password_file = "{creds / "shopfloor-platform.password"}"\n'
        )
        edge_dir = tmp_path / "edge"
        edge_dir.mkdir()
        (creds / "shopfloor-edge-edge-mqtt.password").rename(edge_dir / "broker.password")
        (edge_dir / "edge.toml").write_text(
            '[edge]\nid = "edge-mqtt"\n'
            f'[uplink]\ntransport = "mqtt"\n[uplink.mqtt]\nport = {broker.port}\n'
            'username = "shopfloor-edge-edge-mqtt"\npassword_file = "broker.password"\n'
            f"[health]\nport = {free_port()}\n"
            '[[connectors]]\nkind = "simulator"\nname = "sim"\nbackfill = "2m"\nspeed = 60\n'
        )
        with shopfloor_process(
            ["server", "--config", "server.toml"], port=port, workdir=tmp_path
        ) as server:
            with (edge_dir / "edge.log").open("wb") as log:
                edge = subprocess.Popen(
                    [sys.executable, "-m", "shopfloor", "edge", "--config", "edge.toml"],
                    cwd=edge_dir,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            try:
                deadline = time.monotonic() + 40
                edges: list[dict[str, object]] = []
                while time.monotonic() < deadline:
                    edges = server.get("/api/v1/edges").json()["edges"]
                    batches = [e for e in edges if e.get("edge") == "edge-mqtt"]
                    if batches and int(str(batches[0].get("batches", 0))) >= 5:
                        break
                    time.sleep(0.5)
                else:
                    raise AssertionError(f"{edges}\n{(edge_dir / 'edge.log').read_text()}")
            finally:
                edge.send_signal(signal.SIGINT)
                code = edge.wait(30)
            edge_log = (edge_dir / "edge.log").read_text()
            assert code == 0, edge_log
            (row,) = batches
            assert row["duplicates"] == 0
            tags = server.get("/api/v1/tags").json()["tags"]
            assert any(t["path"].endswith("spindle_temp") and t["unit"] for t in tags)
