"""HTTPS of the real platform (uvicorn with the `[server.tls]` context) and certificates
from `shopfloor certs init`: what a TLS client on the plant network meets.

Whether the *server* refuses old protocols is told apart from the client refusing them
itself: the same client, allowed TLS 1.0 and 1.1 at OpenSSL security level 0, completes
its handshake with a lax control server on the same certificate, and is hung up on by the
platform.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest

from shopfloor.config import ShopfloorConfig
from shopfloor.pki import Issued, init_ca, issue_server
from shopfloor.server.app import Server
from shopfloor.testing.auth import grant
from shopfloor.testing.serving import serving

pytestmark = pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1:DeprecationWarning")

OLD = {"TLSv1": ssl.TLSVersion.TLSv1, "TLSv1_1": ssl.TLSVersion.TLSv1_1}


@pytest.fixture
def pki(tmp_path: Path) -> tuple[Issued, Issued]:
    return init_ca(tmp_path / "pki", hosts=["localhost", "127.0.0.1"])


@asynccontextmanager
async def https_platform(tmp_path: Path, server_cert: Issued) -> AsyncIterator[Server]:
    config = ShopfloorConfig.model_validate(
        {
            "server": {
                "port": 0,
                "data_dir": "platform",
                "tls": {
                    "cert_file": str(server_cert.certificate),
                    "key_file": str(server_cert.private_key),
                },
            }
        }
    ).resolve_paths(tmp_path)
    async with serving(Server(config)) as server:
        yield server


@asynccontextmanager
async def lax_server(server_cert: Issued) -> AsyncIterator[int]:
    """A control server on the same certificate that accepts anything OpenSSL can do."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(server_cert.certificate, server_cert.private_key)
    context.minimum_version = ssl.TLSVersion.TLSv1
    context.set_ciphers("ALL@SECLEVEL=0")

    async def hang_up(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    server = await asyncio.start_server(hang_up, "127.0.0.1", 0, ssl=context)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()


def handshake(
    port: int, ca: Path, *, version: ssl.TLSVersion, ciphers: str = "ALL@SECLEVEL=0"
) -> tuple[str, str] | str:
    """Connect with exactly ``version``: (protocol, cipher) or the error, as text."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(ca)
    context.set_ciphers(ciphers)
    context.minimum_version = context.maximum_version = version
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        try:
            with context.wrap_socket(raw, server_hostname="localhost") as tls:
                cipher = tls.cipher()
                return str(tls.version()), cipher[0] if cipher else ""
        except (ssl.SSLError, OSError) as err:
            return f"{type(err).__name__}: {err}"


async def test_https_serves_with_the_certificate_of_certs_init(
    tmp_path: Path, pki: tuple[Issued, Issued]
) -> None:
    ca, server_cert = pki
    trust = ssl.create_default_context(cafile=str(ca.certificate))
    async with https_platform(tmp_path, server_cert) as server:
        assert server.url.startswith("https://127.0.0.1:")
        async with httpx.AsyncClient(verify=trust, headers=grant(server.app)) as client:
            health = await client.get(f"{server.url}/healthz")
            by_name = await client.get(f"https://localhost:{server.port}/api/v1/tags")
        async with httpx.AsyncClient() as untrusting:  # the system's CAs only
            with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
                await untrusting.get(f"{server.url}/healthz")
        tls12 = await asyncio.to_thread(
            handshake, server.port, ca.certificate, version=ssl.TLSVersion.TLSv1_2
        )
    assert health.status_code == 200
    assert by_name.status_code == 200
    assert tls12 == ("TLSv1.2", "ECDHE-ECDSA-AES256-GCM-SHA384")


@pytest.mark.parametrize("version", sorted(OLD))
async def test_the_server_refuses_tls_1_0_and_1_1(
    tmp_path: Path, pki: tuple[Issued, Issued], version: str
) -> None:
    ca, server_cert = pki
    async with lax_server(server_cert) as lax_port:
        control = await asyncio.to_thread(handshake, lax_port, ca.certificate, version=OLD[version])
    async with https_platform(tmp_path, server_cert) as server:
        refused = await asyncio.to_thread(
            handshake, server.port, ca.certificate, version=OLD[version]
        )
        trust = ssl.create_default_context(cafile=str(ca.certificate))
        async with httpx.AsyncClient(verify=trust) as client:
            after = await client.get(f"{server.url}/healthz")
    assert control[0] == version.replace("_", "."), "this client can speak it"
    assert isinstance(refused, str), refused
    assert "EOF" in refused or "alert" in refused.lower(), refused
    assert after.status_code == 200, "the server survives"


async def test_the_server_refuses_tls_1_2_suites_without_forward_secrecy_or_aead(
    tmp_path: Path, pki: tuple[Issued, Issued]
) -> None:
    ca, server_cert = pki
    weak = "ECDHE-ECDSA-AES128-SHA:ECDHE-ECDSA-AES256-SHA"  # CBC with SHA-1 MACs
    async with lax_server(server_cert) as lax_port:
        control = await asyncio.to_thread(
            handshake, lax_port, ca.certificate, version=ssl.TLSVersion.TLSv1_2, ciphers=weak
        )
    async with https_platform(tmp_path, server_cert) as server:
        refused = await asyncio.to_thread(
            handshake, server.port, ca.certificate, version=ssl.TLSVersion.TLSv1_2, ciphers=weak
        )
    assert control[0] == "TLSv1.2"
    assert isinstance(refused, str), refused


async def test_a_certificate_near_its_end_is_warned_about_at_start(
    tmp_path: Path, pki: tuple[Issued, Issued], caplog: pytest.LogCaptureFixture
) -> None:
    ca, long_lived = pki
    caplog.set_level(logging.WARNING, logger="shopfloor.server.app")
    async with https_platform(tmp_path, long_lived):
        pass
    assert "expires on" not in caplog.text
    short = issue_server(ca.certificate.parent, hosts=["localhost"], days=10)
    async with https_platform(tmp_path, short) as server:
        trust = ssl.create_default_context(cafile=str(ca.certificate))
        async with httpx.AsyncClient(verify=trust) as client:
            assert (await client.get(f"https://localhost:{server.port}/healthz")).is_success
    (warning,) = [r.getMessage() for r in caplog.records if "expires on" in r.getMessage()]
    assert warning.startswith(f"server.tls.cert_file {short.certificate} expires on ")
    assert "shopfloor certs issue-server" in warning
