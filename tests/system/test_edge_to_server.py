"""`shopfloor edge` and `shopfloor server` as separate processes, over real HTTP."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from shopfloor.testing.processes import free_port, shopfloor_process

pytestmark = pytest.mark.system


def test_edge_process_sends_metadata_and_points_to_server_process(tmp_path: Path) -> None:
    port = free_port()
    (tmp_path / "server.toml").write_text(f'[server]\nport = {port}\ndata_dir = "data"\n')
    (tmp_path / "edge.toml").write_text(
        '[edge]\nid = "edge-7"\n'
        f'[uplink]\nurl = "http://127.0.0.1:{port}"\ntoken_env = "EDGE_TOKEN"\n'
        '[[connectors]]\nkind = "simulator"\nname = "sim"\nbackfill = "2m"\nspeed = 60\n'
    )
    with shopfloor_process(
        ["server", "--config", "server.toml"], port=port, workdir=tmp_path
    ) as server:
        edge_dir = tmp_path / "edge"
        edge_dir.mkdir()
        (edge_dir / "edge.toml").write_text((tmp_path / "edge.toml").read_text())
        log = (edge_dir / "edge.log").open("wb")
        proc = subprocess.Popen(
            [sys.executable, "-m", "shopfloor", "edge", "--config", "edge.toml"],
            cwd=edge_dir,
            env={**os.environ, "EDGE_TOKEN": server.token},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + 30
            tags: list[dict[str, object]] = []
            while time.monotonic() < deadline:
                tags = server.get("/api/v1/tags").json()["tags"]
                written = server.get("/healthz").json()["historian"]
                if tags and written["points_written"] > 1000:
                    break
                time.sleep(0.3)
            else:
                raise AssertionError((edge_dir / "edge.log").read_text())
            units = {t["path"].rsplit("/", 1)[1]: t["unit"] for t in tags}
            assert units["spindle_temp"], "metadata announced by the edge reached the server"
            state = next(t for t in tags if t["path"].endswith("cnc-01/state"))
            assert state["states"]["1"] == "running"
        finally:
            proc.send_signal(signal.SIGINT)
            code = proc.wait(30)
            log.close()
        edge_log = (edge_dir / "edge.log").read_text()
        assert code == 0, edge_log
        assert "Traceback" not in edge_log
