"""Throwaway X.509 certificates for tests and the demo: a CA and OPC UA application certificates.

An OPC UA application certificate names its application URI in subjectAltName (clients
and servers check it), allows signatures and key and data encipherment, and is RSA 2048
for Basic256Sha256. Nothing here is fit for production: keys are unencrypted files.

    ca = make_ca(tmp_path)
    server = make_app_certificate(tmp_path, "server", uri="urn:test:server", issuer=ca)
"""

from __future__ import annotations

import datetime as dt
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from shopfloor.pki import (
    Authority,
    build_ca,
    build_client_certificate,
    build_server_certificate,
    general_names,
    new_key,
)

__all__ = ["CertificatePair", "make_app_certificate", "make_ca", "make_tls_certificate"]


@dataclass(frozen=True, slots=True)
class CertificatePair:
    """A certificate and its private key, both as PEM files.

    Attributes:
        certificate: path of the PEM certificate.
        private_key: path of the unencrypted PEM private key (PKCS#8).
        uri: the application URI in subjectAltName ("" for a CA).
    """

    certificate: Path
    private_key: Path
    uri: str = ""

    def load_certificate(self) -> x509.Certificate:
        """The certificate, parsed."""
        return x509.load_pem_x509_certificate(self.certificate.read_bytes())

    def load_private_key(self) -> rsa.RSAPrivateKey:
        """The private key, parsed."""
        key = serialization.load_pem_private_key(self.private_key.read_bytes(), password=None)
        assert isinstance(key, rsa.RSAPrivateKey)
        return key

    def der(self) -> bytes:
        """The certificate in DER form (what OPC UA sends on the wire)."""
        return self.load_certificate().public_bytes(serialization.Encoding.DER)


def _write(
    directory: Path, stem: str, cert: x509.Certificate, key: rsa.RSAPrivateKey
) -> tuple[Path, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    cert_path = directory / f"{stem}.pem"
    key_path = directory / f"{stem}.key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_path.chmod(0o600)
    return cert_path, key_path


def make_ca(directory: Path, name: str = "shopfloor test CA", *, days: int = 30) -> CertificatePair:
    """A self-signed certificate authority (RSA, as OPC UA wants), written as ``ca.pem`` and
    ``ca.key.pem``: :func:`shopfloor.pki.build_ca`, the one ``shopfloor certs init`` makes."""
    key = new_key("rsa")
    assert isinstance(key, rsa.RSAPrivateKey)
    cert_path, key_path = _write(directory, "ca", build_ca(key, name=name, days=days), key)
    return CertificatePair(cert_path, key_path)


def make_app_certificate(
    directory: Path,
    name: str,
    *,
    uri: str,
    issuer: CertificatePair | None = None,
    hosts: Sequence[str] = ("localhost", "127.0.0.1"),
    days: int = 30,
    not_before: dt.datetime | None = None,
) -> CertificatePair:
    """An OPC UA application certificate for ``uri``, self-signed unless ``issuer`` is given.

    Written as ``<name>.pem`` and ``<name>.key.pem`` in ``directory``. ``hosts`` become
    DNS names or IP addresses in subjectAltName (the machine's hostname is added, as
    asyncua checks it). Usable both as a client and a server certificate.
    """
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, name),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "shopfloor"),
        ]
    )
    if issuer is not None:
        signing_key = issuer.load_private_key()
        issuer_name = issuer.load_certificate().subject
    else:
        signing_key, issuer_name = key, subject
    alt: list[x509.GeneralName] = [
        x509.UniformResourceIdentifier(uri),
        *general_names([*hosts, socket.gethostname()]),
    ]
    start = not_before or dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + dt.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(alt), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=True,
                key_encipherment=True,
                data_encipherment=True,
                key_agreement=False,
                key_cert_sign=issuer is None,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(signing_key, hashes.SHA256())
    )
    cert_path, key_path = _write(directory, name, cert, key)
    return CertificatePair(cert_path, key_path, uri)


def make_tls_certificate(
    directory: Path,
    name: str,
    *,
    issuer: CertificatePair,
    server: bool,
    hosts: Sequence[str] = ("localhost", "127.0.0.1"),
    days: int = 30,
    now: dt.datetime | None = None,
) -> CertificatePair:
    """A TLS server (``hosts`` in subjectAltName) or client certificate (for edge ``name``)
    signed by ``issuer``: the ones ``shopfloor certs`` issues (:mod:`shopfloor.pki`), with
    an RSA key. ``now`` moves the validity (an expired certificate for a test).

    Written as ``<name>.pem`` and ``<name>.key.pem`` in ``directory``.
    """
    key = new_key("rsa")
    assert isinstance(key, rsa.RSAPrivateKey)
    authority = Authority(issuer.load_certificate(), issuer.load_private_key())
    if server:
        cert = build_server_certificate(authority, key, hosts=hosts, days=days, now=now)
    else:
        cert = build_client_certificate(authority, key, edge_id=name, days=days, now=now)
    cert_path, key_path = _write(directory, name, cert, key)
    return CertificatePair(cert_path, key_path)
