"""Security of the OPC UA connector against a real asyncua server with Basic256Sha256.

The server's certificate is issued by a throwaway CA; it accepts one client certificate
and one user. Certificates and the server are made once for the module (RSA keys and
asyncua servers are slow to make); every test opens its own session.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from asyncua import ua
from asyncua.server.server import Server

from shopfloor.config.connectors.opcua import OpcUaConnectorConfig
from shopfloor.edge.connectors.opcua import OpcUaConnector, OpcUaPollConnector
from shopfloor.errors import ConnectorError, ConnectorUnavailable
from shopfloor.model import PointBatch
from shopfloor.simulator.serve.opcua import create_server
from shopfloor.testing.certs import CertificatePair, make_app_certificate, make_ca
from shopfloor.testing.processes import free_port

pytestmark = pytest.mark.asyncio(loop_scope="module")

SERVER_URI = "urn:test:secure-plc"
CLIENT_URI = "urn:test:edge"


@dataclass
class Secure:
    server: Server
    endpoint: str
    index: int
    ca: CertificatePair
    server_cert: CertificatePair
    client: CertificatePair
    stranger: CertificatePair  # a client certificate the server does not trust
    other: CertificatePair  # a self-signed certificate that is not the server's


@pytest_asyncio.fixture(scope="module", loop_scope="module", autouse=True)
async def _one_worker_thread() -> AsyncIterator[None]:
    """One executor thread, started before any test (the module shares its loop)."""
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="opcua-test")
    loop = asyncio.get_running_loop()
    loop.set_default_executor(executor)
    await loop.run_in_executor(None, lambda: None)
    yield
    executor.shutdown(wait=True)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def secure(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Secure]:
    folder = tmp_path_factory.mktemp("pki")
    ca = make_ca(folder)
    server_cert = make_app_certificate(folder, "plc", uri=SERVER_URI, issuer=ca)
    client = make_app_certificate(folder, "edge", uri=CLIENT_URI)
    stranger = make_app_certificate(folder, "stranger", uri="urn:test:stranger")
    other = make_app_certificate(folder, "other", uri="urn:test:other")
    endpoint = f"opc.tcp://127.0.0.1:{free_port()}"
    server = await create_server(
        endpoint,
        application_uri=SERVER_URI,
        certificate=server_cert,
        policies=[
            ua.SecurityPolicyType.Basic256Sha256_Sign,
            ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt,
        ],
        users={"operator": "s3cret"},
        trusted_clients=[client.load_certificate()],
        clock=False,
    )
    index = await server.register_namespace("urn:test:secure")
    await server.nodes.objects.add_variable(ua.NodeId("Temp", index), "Temp", 42.25)
    await server.start()
    try:
        yield Secure(server, endpoint, index, ca, server_cert, client, stranger, other)
    finally:
        await server.stop()


def settings(secure: Secure, **overrides: Any) -> OpcUaConnectorConfig:
    values: dict[str, Any] = {
        "name": "secure-plc",
        "endpoint": secure.endpoint,
        "security_mode": "SignAndEncrypt",
        "certificate": secure.client.certificate,
        "private_key": secure.client.private_key,
        "server_certificate": secure.ca.certificate,
        "username": "operator",
        "password_env": "TEST_OPCUA_PASSWORD",
        "mode": "poll",
        "timeout": "2s",
        "publishing_interval": "50ms",
        "tags": [{"name": "temp", "address": f"ns={secure.index};s=Temp"}],
    }
    values.update(overrides)
    return OpcUaConnectorConfig.model_validate(values)


async def read_temp(config: OpcUaConnectorConfig) -> PointBatch:
    connector = OpcUaConnector.from_config(config)
    assert isinstance(connector, OpcUaPollConnector)
    await connector.connect()
    try:
        return await connector.read(connector.groups()[0])
    finally:
        await connector.close()


@pytest.mark.parametrize("mode", ["Sign", "SignAndEncrypt"])
async def test_basic256sha256_with_client_certificate_and_password(
    secure: Secure, mode: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TEST_OPCUA_PASSWORD", "s3cret")
    batch = await read_temp(settings(secure, security_mode=mode))
    assert batch.value.tolist() == [42.25]
    assert batch.quality.tolist() == [0]


async def test_subscription_over_an_encrypted_session(secure: Secure, tmp_path: Path) -> None:
    secret = tmp_path / "password"
    secret.write_text("s3cret\n")
    config = settings(secure, mode="subscribe", password_env=None, password_file=secret)
    connector = OpcUaConnector.from_config(config)
    assert isinstance(connector, OpcUaConnector)
    await connector.connect()
    try:
        stream = connector.subscribe()
        first = await asyncio.wait_for(anext(stream), 5)  # type: ignore[arg-type]
        await stream.aclose()  # type: ignore[attr-defined]
    finally:
        await connector.close()
    assert isinstance(first, PointBatch)
    assert first.value.tolist() == [42.25]


async def test_the_server_certificate_itself_can_be_the_trust_anchor(
    secure: Secure, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TEST_OPCUA_PASSWORD", "s3cret")
    batch = await read_temp(settings(secure, server_certificate=secure.server_cert.certificate))
    assert batch.value.tolist() == [42.25]


async def test_wrong_password_is_refused(secure: Secure, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_OPCUA_PASSWORD", "guess")
    with pytest.raises(ConnectorError, match="BadUserAccessDenied") as caught:
        await read_temp(settings(secure))
    assert not isinstance(caught.value, ConnectorUnavailable)  # no point hoping it heals


async def test_an_untrusted_server_certificate_is_refused(
    secure: Secure, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TEST_OPCUA_PASSWORD", "s3cret")
    with pytest.raises(ConnectorError, match="not trusted") as caught:
        await read_temp(settings(secure, server_certificate=secure.other.certificate))
    digest = hashlib.sha256(secure.server_cert.der()).hexdigest().upper()
    assert ":".join(digest[i : i + 2] for i in range(0, 64, 2)) in str(caught.value)


async def test_a_client_certificate_the_server_does_not_trust_is_refused(
    secure: Secure, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TEST_OPCUA_PASSWORD", "s3cret")
    config = settings(
        secure,
        certificate=secure.stranger.certificate,
        private_key=secure.stranger.private_key,
    )
    with pytest.raises(ConnectorError, match="BadCertificateUntrusted"):
        await read_temp(config)


async def test_no_security_is_refused_by_a_server_that_offers_none(
    secure: Secure, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TEST_OPCUA_PASSWORD", "s3cret")
    config = settings(secure, security_policy="None", allow_insecure=True)
    with pytest.raises(ConnectorError, match="No matching endpoints") as caught:
        await read_temp(config)
    assert not isinstance(caught.value, ConnectorUnavailable)
