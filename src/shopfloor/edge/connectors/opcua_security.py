"""Opening an OPC UA session the safe way: explicit trust, secrets from outside the file.

With security on, the server's certificate is fetched from its endpoint list (over an
unsecured channel that carries nothing secret), checked against the configured trust
(that very certificate, or a CA that issued it, within its validity) and only then used
to open the signed or encrypted channel; asyncua then checks that the session is
answered by the same certificate. An unknown server is refused with its thumbprint in
the message, so an operator can decide to trust it.

asyncua's exceptions are translated here: a server that does not answer is
:class:`~shopfloor.errors.ConnectorUnavailable`; a rejected certificate, policy or
password is a plain :class:`~shopfloor.errors.ConnectorError` (it will not heal by
itself, but the agent still retries with backoff).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from asyncua import ua
from asyncua.client.client import Client
from asyncua.client.ua_client import UaClientState
from asyncua.crypto import security_policies
from asyncua.ua.uaerrors import UaError, UaStatusCodeError
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization

from shopfloor.config.connectors.opcua import OpcUaConnectorConfig
from shopfloor.config.secrets import read_secret
from shopfloor.errors import ConfigError, ConnectorError, ConnectorUnavailable

logger = logging.getLogger(__name__)

DEFAULT_APPLICATION_URI = "urn:shopfloor:edge"
_SECURITY_FAILURES = ("BadCertificate", "BadSecurity", "BadIdentityToken", "BadUserAccessDenied")
_POLICIES: dict[str, type[security_policies.SecurityPolicy]] = {
    "Basic256Sha256": security_policies.SecurityPolicyBasic256Sha256,
}
_MODES = {
    "Sign": ua.MessageSecurityMode.Sign,
    "SignAndEncrypt": ua.MessageSecurityMode.SignAndEncrypt,
}


@dataclass(frozen=True, slots=True)
class _Material:
    """What a session needs from disk and the environment, read once per connect."""

    certificate_der: bytes | None
    private_key_der: bytes | None
    trusted: tuple[x509.Certificate, ...]
    application_uri: str
    password: str | None


def load_certificates(path: Path) -> list[x509.Certificate]:
    """Read every certificate in a PEM file, or the one in a DER file.

    Raises:
        ConnectorError: unreadable, or neither PEM nor DER.
    """
    try:
        data = path.read_bytes()
    except OSError as err:
        raise ConnectorError(f"cannot read certificate {path}: {err.strerror}") from err
    try:
        if b"-----BEGIN CERTIFICATE-----" in data:
            return x509.load_pem_x509_certificates(data)
        return [x509.load_der_x509_certificate(first_certificate(data))]
    except ValueError as err:
        raise ConnectorError(f"{path} holds no PEM or DER certificate: {err}") from err


def first_certificate(der: bytes) -> bytes:
    """The first certificate of a DER chain (servers may send their chain concatenated)."""
    if len(der) < 4 or der[0] != 0x30:
        return der
    length = der[1]
    if length < 0x80:
        return der[: 2 + length]
    count = length & 0x7F
    return der[: 2 + count + int.from_bytes(der[2 : 2 + count], "big")]


def thumbprint(cert: x509.Certificate) -> str:
    """SHA-256 fingerprint in the colon-separated form certificate tools print."""
    digest = hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest().upper()
    return ":".join(digest[i : i + 2] for i in range(0, len(digest), 2))


def application_uri_of(cert: x509.Certificate) -> str | None:
    """The URI in a certificate's subjectAltName (an OPC UA application's identity)."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return None
    uris = san.get_values_for_type(x509.UniformResourceIdentifier)
    return uris[0] if uris else None


def check_trusted(
    server: x509.Certificate, trusted: tuple[x509.Certificate, ...], *, now: dt.datetime
) -> None:
    """Accept ``server`` only if it is a trusted certificate or was issued by one, and valid.

    Raises:
        ConnectorError: the certificate is untrusted, expired or not yet valid.
    """
    subject = server.subject.rfc4514_string()
    if not server.not_valid_before_utc <= now <= server.not_valid_after_utc:
        raise ConnectorError(
            f"server certificate {subject} is valid only from {server.not_valid_before_utc} "
            f"to {server.not_valid_after_utc}"
        )
    der = server.public_bytes(serialization.Encoding.DER)
    for cert in trusted:
        if cert.public_bytes(serialization.Encoding.DER) == der:
            return
        if _issued_by(server, cert):
            return
    raise ConnectorError(
        f"server certificate {subject} (SHA-256 {thumbprint(server)}) is not trusted: it is "
        "neither the configured server_certificate nor issued by it"
    )


def _issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        constraints = issuer.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        return False
    if not constraints.ca:
        return False
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def read_password(config: OpcUaConnectorConfig) -> str | None:
    """The user's password from the environment or a file (never from the config itself).

    Raises:
        ConnectorError: the variable is unset or the file unreadable.
    """
    try:
        return read_secret(env=config.password_env, file=config.password_file, what=config.name)
    except ConfigError as err:
        raise ConnectorError(str(err)) from err


def _load_material(config: OpcUaConnectorConfig) -> _Material:
    """Blocking file reads and key parsing; run in a thread."""
    cert_der = key_der = None
    uri = config.application_uri
    if config.certificate is not None:
        cert = load_certificates(config.certificate)[0]
        cert_der = cert.public_bytes(serialization.Encoding.DER)
        uri = uri or application_uri_of(cert)
    if config.private_key is not None:
        key_der = _load_private_key(config)
    trusted: tuple[x509.Certificate, ...] = ()
    if config.server_certificate is not None:
        trusted = tuple(load_certificates(config.server_certificate))
    return _Material(
        cert_der, key_der, trusted, uri or DEFAULT_APPLICATION_URI, read_password(config)
    )


def _load_private_key(config: OpcUaConnectorConfig) -> bytes:
    assert config.private_key is not None
    password: bytes | None = None
    if config.private_key_password_env is not None:
        value = os.environ.get(config.private_key_password_env)
        if value is None:
            raise ConnectorError(
                f"environment variable {config.private_key_password_env} is not set"
            )
        password = value.encode()
    try:
        data = config.private_key.read_bytes()
    except OSError as err:
        raise ConnectorError(
            f"cannot read private_key {config.private_key}: {err.strerror}"
        ) from err
    try:
        if b"-----BEGIN" in data:
            key = serialization.load_pem_private_key(data, password=password)
        else:
            key = serialization.load_der_private_key(data, password=password)
    except (ValueError, TypeError) as err:
        raise ConnectorError(f"cannot load private_key {config.private_key}: {err}") from err
    return key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def node_id(identifier: Any, namespace: int = 0, kind: Any = None) -> ua.NodeId:
    """A NodeId from plain Python values (asyncua's annotations want its own int types)."""
    return ua.NodeId(identifier, namespace, kind)  # type: ignore[arg-type]


def translate(err: BaseException, endpoint: str) -> ConnectorError:
    """Map an asyncua or socket failure to the shopfloor error a caller should see."""
    if isinstance(err, ConnectorError):
        return err
    if isinstance(err, UaStatusCodeError):
        name = ua.StatusCode(err.code).name
        if name.startswith(_SECURITY_FAILURES):
            return ConnectorError(f"{endpoint} refused the session: {name}")
        return ConnectorUnavailable(f"{endpoint}: {name}")
    if isinstance(err, TimeoutError):
        return ConnectorUnavailable(f"{endpoint} did not answer in time")
    if isinstance(err, UaError) and any(
        word in str(err).lower() for word in ("certificate", "matching endpoint")
    ):
        return ConnectorError(f"{endpoint}: {err}")  # a settings mismatch, not an outage
    detail = str(err) or type(err).__name__
    return ConnectorUnavailable(f"{endpoint}: {detail}")


async def _server_certificate(
    config: OpcUaConnectorConfig, trusted: tuple[x509.Certificate, ...]
) -> bytes:
    """Fetch the certificate of the endpoint matching the policy and mode, and check it."""
    probe = Client(config.endpoint, timeout=config.timeout_s)
    endpoints = await probe.connect_and_get_server_endpoints()
    policy_uri = _POLICIES[config.security_policy].URI
    mode = _MODES[config.security_mode]
    offered = [e for e in endpoints if e.SecurityPolicyUri == policy_uri and e.SecurityMode == mode]
    if not offered:
        have = sorted(
            f"{e.SecurityPolicyUri.rsplit('#', 1)[-1]}/{e.SecurityMode.name}" for e in endpoints
        )
        raise ConnectorError(
            f"{config.endpoint} offers no {config.security_policy}/{config.security_mode} "
            f"endpoint; it offers {', '.join(have) or 'none'}"
        )
    der = first_certificate(offered[0].ServerCertificate or b"")
    try:
        cert = x509.load_der_x509_certificate(der)
    except ValueError as err:
        raise ConnectorError(f"{config.endpoint} sent an unreadable certificate") from err
    check_trusted(cert, trusted, now=dt.datetime.now(dt.UTC))
    return der


async def open_client(config: OpcUaConnectorConfig, *, watchdog_s: float | None = None) -> Client:
    """Connect and activate a session as ``config`` says; the caller disconnects it.

    Raises:
        ConnectorUnavailable: the server does not answer.
        ConnectorError: the server's certificate is untrusted, or the server refused the
            client's certificate, policy or credentials.
    """
    material = await asyncio.to_thread(_load_material, config)
    timeout = config.timeout_s
    client = Client(
        config.endpoint,
        timeout=timeout,
        watchdog_intervall=watchdog_s if watchdog_s is not None else timeout,
    )
    client.name = client.description = "shopfloor"
    client.application_uri = material.application_uri
    client.product_uri = "urn:shopfloor"
    client.session_timeout = round(config.session_timeout_s * 1000)
    if config.username is not None:
        client.set_user(config.username)
        client.set_password(material.password or "")
    try:
        if config.secure:
            if material.certificate_der is None or material.private_key_der is None:
                raise ConnectorError("security needs certificate and private_key")
            async with asyncio.timeout(timeout * 2):
                server_der = await _server_certificate(config, material.trusted)
            await client.set_security(
                _POLICIES[config.security_policy],
                certificate=material.certificate_der,
                private_key=material.private_key_der,
                server_certificate=server_der,
                mode=_MODES[config.security_mode],
            )
        async with asyncio.timeout(timeout * 3):
            await client.connect()
    except (ConnectorError, UaError, OSError, TimeoutError) as err:
        if client.uaclient.state is not UaClientState.DISCONNECTED:
            await close_client(client)
        raise translate(err, config.endpoint) from err
    return client


async def close_client(client: Client, *, timeout_s: float = 2.0) -> None:
    """Disconnect, never raising: closing is best effort when the server is gone."""
    try:
        async with asyncio.timeout(timeout_s):
            await client.disconnect()
    except (UaError, OSError, TimeoutError, ConnectionError) as err:
        logger.debug("disconnect from %s: %s", client.server_url.geturl(), err)
