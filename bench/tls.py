"""What HTTPS costs an edge, against plain HTTP, measured in one run.

Three platforms (`shopfloor server`, DuckDB, real uvicorn, each in a child process) are
started one after the other with certificates from `shopfloor.pki`:

* ``http``: no TLS (the baseline);
* ``https``: `[server.tls]` (ECDSA P-256, TLS 1.3);
* ``https + client cert``: `[server.tls] client_ca`, the client presenting an edge's
  certificate (the edge is identified by it on every request).

All three run at once; this process measures them in turn, in ``--rounds`` rounds:

* ``POST``: one 1,000-point acknowledged Arrow batch per request on a kept-alive
  connection (what a running edge does; answered after the historian's commit);
* ``GET``: ``GET /healthz`` on the same kept-alive connection (the request alone);
* ``new conn``: ``GET /healthz`` on a fresh connection each time (TCP + TLS handshake,
  what an edge pays after every outage).

It prints medians in ms and the ratio to ``http``. Client and servers share the cores.

Run: ``.venv/bin/python bench/tls.py [--requests 300] [--connections 100] [--rounds 5]``
"""

from __future__ import annotations

import argparse
import contextlib
import ssl
import statistics
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

from shopfloor.model import PointBatch
from shopfloor.pki import init_ca, issue_client
from shopfloor.testing.processes import free_port, shopfloor_process
from shopfloor.wire import ARROW_MEDIA_TYPE, encode_arrow

T0 = 1_764_000_000_000_000_000


def batch(number: int, points: int = 1000) -> bytes:
    tags = [f"bench/site/area/line/cell/m{i % 50}/pv" for i in range(points)]
    values = np.arange(points, dtype=np.float64) + number
    rows = [(tags[i], T0 + number * 10**9 + i, float(values[i]), 0) for i in range(points)]
    return encode_arrow(PointBatch.from_points(rows), edge="edge-1", seq=number)


def measure(
    client: httpx.Client,
    base_url: str,
    verify: ssl.SSLContext | bool,
    bodies: list[bytes],
    *,
    connections: int,
) -> tuple[list[float], list[float], list[float]]:
    """Seconds of each kept-alive batch POST, kept-alive GET and GET on a new connection."""
    headers = {"content-type": ARROW_MEDIA_TYPE}
    posts, gets, fresh = [], [], []
    for body in bodies:
        started = time.perf_counter()
        client.post("/api/v1/ingest", content=body, headers=headers).raise_for_status()
        posts.append(time.perf_counter() - started)
        started = time.perf_counter()
        client.get("/healthz").raise_for_status()
        gets.append(time.perf_counter() - started)
    for _ in range(connections):
        with httpx.Client(base_url=base_url, verify=verify, timeout=30) as new:
            started = time.perf_counter()
            new.get("/healthz").raise_for_status()
            fresh.append(time.perf_counter() - started)
    return posts, gets, fresh


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--connections", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="shopfloor-bench-tls-") as tmp:
        root = Path(tmp)
        ca, server_cert = init_ca(root / "pki", hosts=["localhost", "127.0.0.1"])
        edge_cert = issue_client(root / "pki", "edge-1")
        tls = (
            f'[server.tls]\ncert_file = "{server_cert.certificate}"\n'
            f'key_file = "{server_cert.private_key}"\n'
        )
        trust = ssl.create_default_context(cafile=str(ca.certificate))
        with_cert = ssl.create_default_context(cafile=str(ca.certificate))
        with_cert.load_cert_chain(edge_cert.certificate, edge_cert.private_key)
        modes: list[tuple[str, str, ssl.SSLContext | None]] = [
            ("http", "", None),
            ("https", tls, trust),
            ("https + client cert", tls + f'client_ca = "{ca.certificate}"\n', with_cert),
        ]
        with contextlib.ExitStack() as stack:
            clients: list[tuple[str, httpx.Client, str, ssl.SSLContext | bool]] = []
            for number, (name, extra, context) in enumerate(modes):
                work = root / f"mode{number}"
                work.mkdir()
                port = free_port()
                (work / "server.toml").write_text(
                    f'[server]\nport = {port}\ndata_dir = "data"\n'
                    '[logging]\nlevel = "WARNING"\n' + extra
                )
                server = stack.enter_context(
                    shopfloor_process(
                        ["server", "--config", "server.toml"], port=port, workdir=work, tls=context
                    )
                )
                base = server.base_url.replace("127.0.0.1", "localhost")
                verify: ssl.SSLContext | bool = context or True
                client = stack.enter_context(httpx.Client(base_url=base, verify=verify, timeout=30))
                for seq in range(1, 11):  # warm up the historian and the connection
                    client.post(
                        "/api/v1/ingest",
                        content=batch(seq),
                        headers={"content-type": ARROW_MEDIA_TYPE},
                    ).raise_for_status()
                clients.append((name, client, base, verify))
            # rounds over the modes in turn, so that a busy moment of a shared machine
            # falls on every mode alike
            samples: dict[str, tuple[list[float], list[float], list[float]]] = {
                name: ([], [], []) for name, *_ in clients
            }
            per_round = max(1, args.requests // args.rounds)
            for round_number in range(args.rounds):
                first = 11 + round_number * per_round
                bodies = [batch(seq) for seq in range(first, first + per_round)]
                for name, client, base, verify in clients:
                    measured = measure(
                        client,
                        base,
                        verify,
                        bodies,
                        connections=max(1, args.connections // args.rounds),
                    )
                    for kept, new in zip(samples[name], measured, strict=True):
                        kept.extend(new)

    medians = {name: [statistics.median(s) * 1e3 for s in kinds] for name, kinds in samples.items()}
    base_row = medians["http"]
    print(
        f"{args.rounds} rounds; per mode {args.requests} POSTs of 1,000-point batches and "
        f"GETs (kept alive), {args.connections} GETs on new connections; medians in ms"
    )
    print(f"{'mode':<22}{'POST':>8}{'ratio':>7}{'GET':>8}{'ratio':>7}{'new conn':>10}{'ratio':>7}")
    for name, row in medians.items():
        cells = "".join(
            f"{value:>{width}.2f}{value / base:>7.2f}"
            for value, base, width in zip(row, base_row, (8, 8, 10), strict=True)
        )
        print(f"{name:<22}{cells}")


if __name__ == "__main__":
    main()
