"""Per-edge credentials over HTTPS: the real platform (uvicorn over TLS, DuckDB, the
credentials file) and real edge uplinks built from edge configuration files.

The edge's side of the contract: a refused credential (401/403) costs delay, never data —
batches stay in the outbox, never in quarantine, and go once the token is right.
"""

from __future__ import annotations

import asyncio
import logging
import os
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
from shopfloor.edge.uplink.http import HttpTransport, Verdict
from shopfloor.model import PointBatch, TagMeta
from shopfloor.server.app import Server
from shopfloor.server.ingest.credentials import issue_credential
from shopfloor.testing.auth import grant
from shopfloor.testing.certs import CertificatePair, make_ca, make_tls_certificate
from shopfloor.testing.serving import serving

from .conftest import stored_ts

T0 = 1_764_000_000_000_000_000
TAG = "acme/p/a/l/c/m/temp"


def points(k: int, n: int = 20) -> PointBatch:
    """Batch ``k``: ``n`` points with timestamps unique across batches."""
    return PointBatch.from_points([(TAG, T0 + k * 1000 + i, float(k), 0) for i in range(n)])


def expected_ts(batches: range) -> np.ndarray:
    return np.sort(np.concatenate([points(k).ts for k in batches]))


@dataclass
class Site:
    """A platform's certificates and credentials file, and where edges keep their files."""

    root: Path
    ca: CertificatePair
    server_cert: CertificatePair
    credentials: Path

    def issue(self, edge: str) -> str:
        return issue_credential(self.credentials, edge)

    def edge_config(
        self,
        name: str,
        *,
        edge_id: str,
        url: str,
        token: str | None,
        ca: bool = True,
    ) -> Path:
        """Write an edge's configuration (and token file); return its path."""
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
            "max_refusals = 1",  # a single refusal would quarantine: 401/403 must not count
        ]
        if token is not None:
            (folder / "edge.token").write_text(token + "\n")
            (folder / "edge.token").chmod(0o600)
            lines.append('token_file = "edge.token"')
        if ca:
            lines.append(f'ca_file = "{self.ca.certificate}"')
        lines += ["[health]", "enabled = false"]
        path = folder / "edge.toml"
        path.write_text("\n".join(lines) + "\n")
        return path


@pytest.fixture
def site(tmp_path: Path) -> Site:
    ca = make_ca(tmp_path / "pki")
    server_cert = make_tls_certificate(tmp_path / "pki", "platform", issuer=ca, server=True)
    credentials = tmp_path / "edge-credentials.txt"
    credentials.write_text("# edges allowed to send\n")
    return Site(tmp_path, ca, server_cert, credentials)


@asynccontextmanager
async def secure_platform(site: Site) -> AsyncIterator[Server]:
    """The real platform serving HTTPS and requiring edge credentials."""
    config = ShopfloorConfig.model_validate(
        {
            "server": {
                "port": 0,
                "data_dir": "platform",
                "tls": {
                    "cert_file": str(site.server_cert.certificate),
                    "key_file": str(site.server_cert.private_key),
                },
            },
            "historian": {"flush_interval_s": 0.05},
            "ingest": {"edge_credentials": site.credentials.name},
        }
    ).resolve_paths(site.root)
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


def drained(uplink: OutboxUplink) -> Callable[[], bool]:
    return lambda: uplink.outbox.stats().batches == 0


async def tags_stored(server: Server) -> set[str]:
    await server.historian.flush()
    return {t.path for t in await server.historian.tags()}


async def test_an_edge_with_its_token_stores_every_batch_once_over_https(site: Site) -> None:
    token = site.issue("edge-a")
    async with secure_platform(site) as server:
        assert server.url.startswith("https://")
        config = site.edge_config("a", edge_id="edge-a", url=server.url, token=token)
        async with running_uplink(config) as uplink:
            await uplink.announce([TagMeta(TAG, unit="degC")])
            for k in range(40):
                await uplink.send(points(k))
            await until(drained(uplink), "the outbox to drain")
            report = {"edge_time_ns": time.time_ns(), **uplink.status()}
            status = await uplink.put_status(report)
        ts = await stored_ts(server, TAG)
        async with httpx.AsyncClient(
            base_url=server.url, verify=_ctx(site), headers=grant(server.app)
        ) as reader:
            edges = (await reader.get("/api/v1/edges")).json()["edges"]  # reads stay open
    np.testing.assert_array_equal(np.sort(ts), expected_ts(range(40)))
    assert status.committed, status.detail
    (edge,) = edges
    assert (edge["edge"], edge["batches"], edge["duplicates"]) == ("edge-a", 40, 0)
    assert edge["status"] is not None


@pytest.mark.parametrize("credential", ["none", "unknown", "another edge's"])
async def test_a_refused_credential_keeps_every_batch_until_the_token_is_fixed(
    site: Site, credential: str
) -> None:
    right = site.issue("edge-a")
    other = site.issue("edge-b")
    unknown = issue_credential(site.root / "elsewhere.txt", "edge-a")  # well formed, not here
    wrong = {"none": None, "unknown": unknown, "another edge's": other}[credential]
    async with secure_platform(site) as server:
        config = site.edge_config("a", edge_id="edge-a", url=server.url, token=wrong)
        async with running_uplink(config) as uplink:
            for k in range(10):  # no tags announced: the batches themselves are refused
                await uplink.send(points(k))
            await until(lambda: uplink.sender.stats().failures >= 3, "three refused attempts")
            stats = uplink.sender.stats()
            outbox = uplink.outbox.stats()
        assert TAG not in await tags_stored(server), "nothing is stored"
        assert outbox.batches == 10, "every batch is kept"
        assert outbox.quarantined_batches == 0
        assert list_quarantined(config.parent / "data" / "outbox") == []
        assert stats.refusals == 0
        assert ("HTTP 403" if credential == "another edge's" else "HTTP 401") in (
            stats.last_error or ""
        )

        fixed = site.edge_config("a", edge_id="edge-a", url=server.url, token=right)
        async with running_uplink(fixed) as uplink:  # the edge restarted with its own token
            await until(drained(uplink), "the outbox to drain")
        ts = await stored_ts(server, TAG)
    np.testing.assert_array_equal(np.sort(ts), expected_ts(range(10)))


async def test_a_token_is_good_only_for_its_own_edge_and_writes_only(site: Site) -> None:
    token_a = site.issue("edge-a")
    batch = {"version": 1, "tags": [TAG], "tag_index": [0], "ts": [T0], "value": [1.0]}
    status = {"edge_time_ns": time.time_ns(), "buffer": {}, "uplink": {}}
    async with (
        secure_platform(site) as server,
        httpx.AsyncClient(
            base_url=server.url, verify=_ctx(site), headers=grant(server.app)
        ) as client,
    ):
        bearer = {"authorization": f"Bearer {token_a}"}
        as_b = await client.post(
            "/api/v1/ingest", json={**batch, "edge": "edge-b", "seq": 1}, headers=bearer
        )
        nameless = await client.post("/api/v1/ingest", json=batch, headers=bearer)
        b_status = await client.put("/api/v1/edges/edge-b/status", json=status, headers=bearer)
        anonymous = await client.post("/api/v1/ingest", json={**batch, "edge": "edge-a"})
        forged = await client.put(
            "/api/v1/tags",
            json={"tags": [{"path": TAG}]},
            headers={"authorization": "Bearer " + "x" * 43},
        )
        no_tags = await client.put("/api/v1/tags", json={"tags": [{"path": TAG}]})
        no_status = await client.put("/api/v1/edges/edge-a/status", json=status)
        reads = [
            (await client.get(path)).status_code
            for path in ("/api/v1/tags", "/api/v1/values/latest", "/api/v1/edges", "/healthz")
        ]
        spec = (await client.get("/openapi.json")).json()
        assert TAG not in await tags_stored(server), "nothing of the refused requests is stored"
        own = await client.post(
            "/api/v1/ingest", json={**batch, "edge": "edge-a", "seq": 1}, headers=bearer
        )
        assert TAG in await tags_stored(server)

    assert as_b.status_code == 403
    message = _error(as_b)["message"]
    assert "'edge-a'" in message
    assert "'edge-b'" in message
    assert nameless.status_code == 403
    assert _error(nameless)["message"] == "credentials are required: the batch must name its edge"
    assert b_status.status_code == 403
    assert "'edge-a'" in _error(b_status)["message"]
    assert "'edge-b'" in _error(b_status)["message"]
    for refused in (anonymous, forged, no_tags, no_status):
        assert refused.status_code == 401
        assert refused.headers["www-authenticate"] == "Bearer"
        assert _error(refused)["code"] == "unauthorized"
    assert reads == [200, 200, 200, 200], "read endpoints answer a user's API token"
    assert own.status_code == 200, own.text
    assert "EdgeToken" in spec["components"]["securitySchemes"]
    for path, method in (
        ("/api/v1/ingest", "post"),
        ("/api/v1/tags", "put"),
        ("/api/v1/edges/{edge_id}/status", "put"),
    ):
        assert {"401", "403"} <= set(spec["paths"][path][method]["responses"]), path


async def test_the_credentials_file_is_picked_up_while_the_platform_runs(
    site: Site, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="shopfloor.server.ingest.credentials")
    site.issue("edge-a")
    staging = site.root / "staging.txt"
    token_c = issue_credential(staging, "edge-c")  # issued, not yet given to the platform
    async with secure_platform(site) as server:
        config = site.edge_config("c", edge_id="edge-c", url=server.url, token=token_c)
        async with running_uplink(config) as uplink:
            for k in range(5):
                await uplink.send(points(k))
            await until(lambda: uplink.sender.stats().failures >= 2, "edge-c to be refused")
            assert uplink.outbox.stats().batches == 5

            # the operator adds edge-c, and a line with a typo, without restarting anything
            with site.credentials.open("a") as file:
                file.write(staging.read_text().splitlines()[0] + "\n")
                file.write("edge-x sha256:0123\n")
            await until(drained(uplink), "edge-c to be accepted")
            assert "line 4" in caplog.text, "the malformed line is logged with its number"

            # and revokes it again (an atomic rewrite without its line)
            kept = [ln for ln in site.credentials.read_text().splitlines() if "edge-c" not in ln]
            temp = site.credentials.with_suffix(".new")
            temp.write_text("\n".join(kept) + "\n")
            os.replace(temp, site.credentials)
            await _until_refused(server, site, token_c)
            before = uplink.sender.stats().failures
            for k in range(5, 8):
                await uplink.send(points(k))
            await until(lambda: uplink.sender.stats().failures > before, "edge-c to be refused")
            assert uplink.outbox.stats().batches == 3
        ts = await stored_ts(server, TAG)
    np.testing.assert_array_equal(np.sort(ts), expected_ts(range(5)))


async def test_plain_http_to_the_tls_port_fails_clearly(site: Site) -> None:
    token = site.issue("edge-a")
    async with secure_platform(site) as server:
        plain = HttpTransport(
            server.url.replace("https://", "http://"), edge_id="edge-a", token=token
        )
        try:
            answer = await plain.put_tags([TagMeta(TAG)])
        finally:
            await plain.close()
        assert TAG not in await tags_stored(server)
    assert answer.verdict is Verdict.UNAVAILABLE
    assert "uplink.url must be https://" in answer.detail


async def test_the_private_ca_is_trusted_only_through_ca_file(site: Site) -> None:
    token = site.issue("edge-a")
    async with secure_platform(site) as server:
        untrusting = site.edge_config("a", edge_id="edge-a", url=server.url, token=token, ca=False)
        async with running_uplink(untrusting) as uplink:
            await uplink.send(points(0))
            await until(lambda: uplink.sender.stats().failures >= 1, "a refused handshake")
            assert "CERTIFICATE_VERIFY_FAILED" in (uplink.sender.stats().last_error or "")
        assert TAG not in await tags_stored(server)

        trusting = site.edge_config("a", edge_id="edge-a", url=server.url, token=token)
        async with running_uplink(trusting) as uplink:
            await until(drained(uplink), "the outbox to drain")
        ts = await stored_ts(server, TAG)
    np.testing.assert_array_equal(ts, points(0).ts)


def _ctx(site: Site) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(site.ca.certificate))


async def _until_refused(server: Server, site: Site, token: str) -> None:
    """Wait until the platform answers ``token`` with 401 (it re-reads within a second)."""
    deadline = time.monotonic() + 20
    async with httpx.AsyncClient(
        base_url=server.url, verify=_ctx(site), headers=grant(server.app)
    ) as client:
        headers = {"authorization": f"Bearer {token}"}
        # an accepted token gets past to the body check (422 for the empty report)
        while (await client.put("/api/v1/tags", json={}, headers=headers)).status_code != 401:
            if time.monotonic() > deadline:
                raise AssertionError("the revoked token is still accepted")
            await asyncio.sleep(0.05)


def _error(response: httpx.Response) -> dict[str, Any]:
    body: dict[str, Any] = response.json()["error"]
    return body
