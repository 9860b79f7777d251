"""The plant network with TLS, as an operator sets it up: `shopfloor certs` makes the CA,
the server's and an edge's certificates; `shopfloor server` serves HTTPS and knows edges by
their client certificates; two `shopfloor edge` processes — one with its certificate, one
without — each with only the CA file to trust."""

from __future__ import annotations

import signal
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from shopfloor.cli import app
from shopfloor.testing.processes import free_port, shopfloor_process

pytestmark = pytest.mark.system


def shopfloor(workdir: Path, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "shopfloor", *args],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


@contextmanager
def edge_process(folder: Path, config: str) -> Iterator[Path]:
    folder.mkdir()
    (folder / "edge.toml").write_text(config)
    log_path = folder / "edge.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "shopfloor", "edge", "--config", "edge.toml"],
            cwd=folder,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    try:
        yield log_path
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            code = proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            code = proc.wait(10)
        assert code == 0, log_path.read_text()
        assert "Traceback" not in log_path.read_text()


def edge_config(edge_id: str, port: int, pki: Path, *, client: bool) -> str:
    lines = [
        "[edge]",
        f'id = "{edge_id}"',
        "[uplink]",
        f'url = "https://localhost:{port}"',
        'retry_max = "1s"',
        f'ca_file = "{pki / "ca.pem"}"',
    ]
    if client:
        lines += [
            f'cert_file = "{pki / "clients" / f"{edge_id}.pem"}"',
            f'key_file = "{pki / "clients" / f"{edge_id}.key.pem"}"',
        ]
    lines += [
        "[health]",
        f"port = {free_port()}",
        "[[connectors]]",
        'kind = "simulator"',
        'name = "sim"',
        'backfill = "2m"',
        "speed = 60",
    ]
    return "\n".join(lines) + "\n"


def test_edges_over_https_with_the_private_ca_and_client_certificates(tmp_path: Path) -> None:
    pki = tmp_path / "pki"
    shopfloor(tmp_path, "certs", "init", "--dir", "pki", "--host", "localhost", "--ip", "127.0.0.1")
    issued = CliRunner().invoke(app, ["certs", "issue-client", "edge-7", "--dir", str(pki)])
    assert issued.exit_code == 0, issued.output  # in-process: one interpreter start less
    port = free_port()
    (tmp_path / "server.toml").write_text(
        f'[server]\nport = {port}\ndata_dir = "data"\n'
        '[server.tls]\ncert_file = "pki/server.pem"\nkey_file = "pki/server.key.pem"\n'
        'client_ca = "pki/ca.pem"\n'
    )
    trust = ssl.create_default_context(cafile=str(pki / "ca.pem"))
    with (
        shopfloor_process(
            ["server", "--config", "server.toml"], port=port, workdir=tmp_path, tls=trust
        ) as server,
        edge_process(tmp_path / "edge-7", edge_config("edge-7", port, pki, client=True)),
        edge_process(
            tmp_path / "edge-8", edge_config("edge-8", port, pki, client=False)
        ) as edge_8_log,
    ):
        assert server.base_url.startswith("https://")
        deadline = time.monotonic() + 30
        edges: list[dict[str, Any]] = []
        with httpx.Client(base_url=server.base_url, verify=trust, headers=server.headers) as client:
            while time.monotonic() < deadline:
                edges = client.get("/api/v1/edges").json()["edges"]
                written = client.get("/healthz").json()["historian"]["points_written"]
                if edges and written > 1000 and "HTTP 401" in edge_8_log.read_text():
                    break
                time.sleep(0.3)
            else:
                raise AssertionError(f"{edges}\n{server.log()}\n{edge_8_log.read_text()}")
            with pytest.raises(httpx.TransportError):  # plain HTTP to the TLS port
                httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5)
        assert [e["edge"] for e in edges] == ["edge-7"], "edge-8 has no certificate"
        assert "this platform requires an edge client certificate" in edge_8_log.read_text()
    assert "Traceback" not in server.log()
