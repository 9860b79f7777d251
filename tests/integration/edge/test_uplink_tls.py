"""Edges and the platform's private CA over real HTTPS: the edge trusts only its
`uplink.ca_file`, and with `[server.tls] client_ca` the platform knows each edge by its
client certificate (`shopfloor certs issue-client`), so edge A can never write as edge B.

What an edge relies on: a platform it cannot verify, or one that does not accept its
certificate, costs delay, never data — every batch stays in the outbox (not quarantine)
and goes once the files are right.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from shopfloor.config import ShopfloorConfig, load_edge_config
from shopfloor.edge.buffer.quarantine import list_quarantined
from shopfloor.edge.uplink.forwarder import OutboxUplink, build_outbox_uplink
from shopfloor.model import PointBatch, TagMeta
from shopfloor.pki import Issued, init_ca, issue_client
from shopfloor.server.app import Server
from shopfloor.server.ingest.credentials import issue_credential
from shopfloor.testing.auth import grant
from shopfloor.testing.serving import serving

from .conftest import stored_ts

T0 = 1_764_000_000_000_000_000
TAG = "acme/p/a/l/c/m/temp"


def points(k: int, n: int = 20) -> PointBatch:
    return PointBatch.from_points([(TAG, T0 + k * 1000 + i, float(k), 0) for i in range(n)])


@dataclass
class Plant:
    """The platform's CA (from `certs init`), another CA, and the edges' folders."""

    root: Path
    ca: Issued
    server_cert: Issued
    other_ca: Issued

    @property
    def pki(self) -> Path:
        return self.ca.certificate.parent

    def client(self, edge_id: str, *, other_ca: bool = False) -> Issued:
        ca_dir = self.other_ca.certificate.parent if other_ca else self.pki
        return issue_client(ca_dir, edge_id, replace=True)

    def edge_config(
        self,
        name: str,
        *,
        edge_id: str,
        url: str,
        ca_file: Path | None,
        client: Issued | None = None,
        token: str | None = None,
    ) -> Path:
        folder = self.root / name
        folder.mkdir(exist_ok=True)
        lines = [
            "[edge]",
            f'id = "{edge_id}"',
            'data_dir = "data"',
            "[uplink]",
            f'url = "{url}"',
            'timeout = "5s"',
            'retry_min = "50ms"',
            'retry_max = "200ms"',
            "max_refusals = 1",  # a refusal would quarantine at once: TLS must never count
        ]
        if ca_file is not None:
            lines.append(f'ca_file = "{ca_file}"')
        if client is not None:
            lines += [f'cert_file = "{client.certificate}"', f'key_file = "{client.private_key}"']
        if token is not None:
            (folder / "edge.token").write_text(token + "\n")
            lines.append('token_file = "edge.token"')
        lines += ["[health]", "enabled = false"]
        path = folder / "edge.toml"
        path.write_text("\n".join(lines) + "\n")
        return path


@pytest.fixture
def plant(tmp_path: Path) -> Plant:
    ca, server_cert = init_ca(tmp_path / "pki", hosts=["localhost", "127.0.0.1"])
    other_ca, _ = init_ca(tmp_path / "other-pki", hosts=["localhost", "127.0.0.1"])
    return Plant(tmp_path, ca, server_cert, other_ca)


@asynccontextmanager
async def platform(
    plant: Plant, *, client_ca: bool, credentials: Path | None = None
) -> AsyncIterator[Server]:
    tls: dict[str, str] = {
        "cert_file": str(plant.server_cert.certificate),
        "key_file": str(plant.server_cert.private_key),
    }
    if client_ca:
        tls["client_ca"] = str(plant.ca.certificate)
    config = ShopfloorConfig.model_validate(
        {
            "server": {"port": 0, "data_dir": "platform", "tls": tls},
            "historian": {"flush_interval_s": 0.05},
            "ingest": {"edge_credentials": str(credentials) if credentials else ""},
        }
    ).resolve_paths(plant.root)
    async with serving(Server(config)) as server:
        yield server


@asynccontextmanager
async def running_uplink(config: Path) -> AsyncIterator[OutboxUplink]:
    uplink = build_outbox_uplink(load_edge_config(config))
    await uplink.start()
    await uplink.wait_ready()
    try:
        yield uplink
    finally:
        await uplink.close()


async def until(condition: Callable[[], bool], what: str, timeout_s: float = 20) -> None:
    """Wait for ``condition`` (a deadline against hangs, not a timing assertion)."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


def trusting(plant: Plant, client: Issued | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(plant.ca.certificate))
    if client is not None:
        context.load_cert_chain(client.certificate, client.private_key)
    return context


async def tags_stored(server: Server) -> set[str]:
    await server.historian.flush()
    return {t.path for t in await server.historian.tags()}


async def test_an_edge_with_its_client_certificate_stores_points_over_https(
    plant: Plant,
) -> None:
    async with platform(plant, client_ca=True) as server:
        config = plant.edge_config(
            "a",
            edge_id="edge-a",
            url=server.url,
            ca_file=plant.ca.certificate,
            client=plant.client("edge-a"),
        )
        async with running_uplink(config) as uplink:
            await uplink.announce([TagMeta(TAG, unit="degC")])
            for k in range(10):
                await uplink.send(points(k))
            await until(lambda: uplink.outbox.stats().batches == 0, "the outbox to drain")
        ts = await stored_ts(server, TAG)
        async with httpx.AsyncClient(
            base_url=server.url, verify=trusting(plant), headers=grant(server.app)
        ) as reader:
            edges = (await reader.get("/api/v1/edges")).json()["edges"]  # no certificate
    expected = np.sort(np.concatenate([points(k).ts for k in range(10)]))
    np.testing.assert_array_equal(np.sort(ts), expected)
    assert [(e["edge"], e["batches"]) for e in edges] == [("edge-a", 10)]


@pytest.mark.parametrize("problem", ["no ca_file", "another CA in ca_file"])
async def test_an_edge_that_cannot_verify_the_platform_keeps_its_batches(
    plant: Plant, problem: str
) -> None:
    async with platform(plant, client_ca=False) as server:
        # no edge credentials: the edge sends an API token that grants ingest
        token = grant(server.app, role="ingest")["Authorization"].split()[1]
        ca_file = None if problem == "no ca_file" else plant.other_ca.certificate
        config = plant.edge_config(
            "a", edge_id="edge-a", url=server.url, ca_file=ca_file, token=token
        )
        async with running_uplink(config) as uplink:
            for k in range(5):
                await uplink.send(points(k))
            await until(lambda: uplink.sender.stats().failures >= 2, "refused handshakes")
            stats, outbox = uplink.sender.stats(), uplink.outbox.stats()
        assert TAG not in await tags_stored(server)
        assert "CERTIFICATE_VERIFY_FAILED" in (stats.last_error or "")
        assert (outbox.batches, outbox.quarantined_batches, stats.refusals) == (5, 0, 0)

        fixed = plant.edge_config(
            "a", edge_id="edge-a", url=server.url, ca_file=plant.ca.certificate, token=token
        )
        async with running_uplink(fixed) as uplink:
            await until(lambda: uplink.outbox.stats().batches == 0, "the outbox to drain")
        assert len(await stored_ts(server, TAG)) == 5 * 20


@pytest.mark.parametrize("client", ["none", "from another CA"])
async def test_without_an_accepted_client_certificate_an_edge_keeps_its_batches(
    plant: Plant, client: str
) -> None:
    async with platform(plant, client_ca=True) as server:
        cert = None if client == "none" else plant.client("edge-a", other_ca=True)
        config = plant.edge_config(
            "a", edge_id="edge-a", url=server.url, ca_file=plant.ca.certificate, client=cert
        )
        async with running_uplink(config) as uplink:
            for k in range(5):
                await uplink.send(points(k))
            await until(lambda: uplink.sender.stats().failures >= 2, "refused requests")
            stats, outbox = uplink.sender.stats(), uplink.outbox.stats()
        assert TAG not in await tags_stored(server)
        assert (outbox.batches, outbox.quarantined_batches, stats.refusals) == (5, 0, 0)
        assert list_quarantined(config.parent / "data" / "outbox") == []
        if client == "none":
            assert "HTTP 401" in (stats.last_error or "")
            assert "client certificate" in (stats.last_error or "")

        fixed = plant.edge_config(
            "a",
            edge_id="edge-a",
            url=server.url,
            ca_file=plant.ca.certificate,
            client=plant.client("edge-a"),
        )
        async with running_uplink(fixed) as uplink:
            await until(lambda: uplink.outbox.stats().batches == 0, "the outbox to drain")
        assert len(await stored_ts(server, TAG)) == 5 * 20


async def test_a_client_certificate_never_writes_as_another_edge(plant: Plant) -> None:
    credentials = plant.root / "edge-credentials.txt"
    token_b = issue_credential(credentials, "edge-b")
    batch = {"version": 1, "tags": [TAG], "tag_index": [0], "ts": [T0], "value": [1.0]}
    status = {"edge_time_ns": time.time_ns(), "buffer": {}, "uplink": {}}
    cert_a = plant.client("edge-a")
    async with (
        platform(plant, client_ca=True, credentials=credentials) as server,
        httpx.AsyncClient(base_url=server.url, verify=trusting(plant, cert_a)) as as_a,
        httpx.AsyncClient(base_url=server.url, verify=trusting(plant)) as anonymous,
    ):
        for_b = await as_a.post("/api/v1/ingest", json={**batch, "edge": "edge-b", "seq": 1})
        b_status = await as_a.put("/api/v1/edges/edge-b/status", json=status)
        with_b_token = await as_a.post(
            "/api/v1/ingest",
            json={**batch, "edge": "edge-b", "seq": 2},
            headers={"authorization": f"Bearer {token_b}"},
        )
        nothing = await anonymous.post("/api/v1/ingest", json={**batch, "edge": "edge-a"})
        read = await anonymous.get("/api/v1/tags", headers=grant(server.app, role="viewer"))
        assert TAG not in await tags_stored(server)
        own = await as_a.post("/api/v1/ingest", json={**batch, "edge": "edge-a", "seq": 1})
        by_token = await anonymous.post(  # tokens keep working beside certificates
            "/api/v1/ingest",
            json={**batch, "edge": "edge-b", "seq": 1},
            headers={"authorization": f"Bearer {token_b}"},
        )
    assert for_b.status_code == 403
    assert "'edge-a'" in _message(for_b)
    assert "'edge-b'" in _message(for_b)
    assert b_status.status_code == 403
    assert with_b_token.status_code == 403, "a certificate and a token of two edges"
    assert nothing.status_code == 401
    assert read.status_code == 200, "reads need a user's token, no certificate"
    assert own.status_code == 200, own.text
    assert by_token.status_code == 200, by_token.text


def _message(response: httpx.Response) -> str:
    body: dict[str, Any] = response.json()["error"]
    return str(body["message"])
