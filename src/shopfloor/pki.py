"""A private certificate authority for the plant network (``shopfloor certs``).

A plant rarely has a PKI of its own, and a self-signed server certificate teaches people to
click through warnings or to turn verification off. So shopfloor makes a small CA: the
platform gets a server certificate from it, each edge trusts it (``uplink.ca_file``) and
may get a client certificate from it (``shopfloor certs issue-client EDGE_ID``) that the
platform takes as the edge's identity (``[server.tls] client_ca``).

The folder a CA lives in::

    ca.pem              the CA certificate: give it to every edge (and browser) that
                        should trust the platform
    ca.key.pem          the CA's private key (0600): keep it off the network
    server.pem          the platform's certificate, then the CA's ([server.tls] cert_file)
    server.key.pem      its key (0600, [server.tls] key_file)
    clients/EDGE.pem    an edge's client certificate, and EDGE.key.pem (0600)

Keys are ECDSA P-256 by default (every TLS 1.2 client has it, and they are quick to make);
RSA 2048 for peers that need it (OPC UA). A CA is never overwritten: :func:`init_ca`
refuses a folder that holds one. Private keys are created with mode 0600 from the start
(``O_EXCL``), never chmod-ed after being written.

Errors are :class:`PkiError`, naming the file or value.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import re
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from shopfloor.errors import ShopfloorError

__all__ = [
    "CA_CERT",
    "CA_KEY",
    "EDGE_URI_PREFIX",
    "SERVER_CERT",
    "SERVER_KEY",
    "Authority",
    "Issued",
    "KeyType",
    "PkiError",
    "build_ca",
    "build_client_certificate",
    "build_server_certificate",
    "default_hosts",
    "edge_of_certificate",
    "general_names",
    "init_ca",
    "issue_client",
    "issue_server",
    "load_authority",
    "new_key",
]

CA_CERT: Final = "ca.pem"
CA_KEY: Final = "ca.key.pem"
SERVER_CERT: Final = "server.pem"
SERVER_KEY: Final = "server.key.pem"
CLIENTS: Final = "clients"
EDGE_URI_PREFIX: Final = "urn:shopfloor:edge:"
"""subjectAltName URI of an edge's client certificate, followed by the edge id."""

KeyType = Literal["ec", "rsa"]
PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey

_EDGE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$")  # as config.edge's edge.id
_LABEL = r"[A-Za-z0-9]([A-Za-z0-9\-]{0,61}[A-Za-z0-9])?"
_HOST = re.compile(rf"^(\*\.)?{_LABEL}(\.{_LABEL})*\.?$")
_BACKDATE = dt.timedelta(minutes=5)
"""Certificates start a little in the past: a peer whose clock is slightly behind."""


class PkiError(ShopfloorError):
    """A certificate or key cannot be made, read or written (the message names it)."""


@dataclass(frozen=True, slots=True)
class Authority:
    """A CA: its certificate and private key, in memory."""

    certificate: x509.Certificate
    key: PrivateKey


@dataclass(frozen=True, slots=True)
class Issued:
    """Files written for one certificate.

    Attributes:
        certificate: the PEM certificate file.
        private_key: the PEM private key file (mode 0600).
        names: the subjectAltName entries, as text, for the user.
    """

    certificate: Path
    private_key: Path
    names: tuple[str, ...] = ()


# ----------------------------------------------------------------------- builders
def new_key(kind: KeyType = "ec") -> PrivateKey:
    """A new private key: ECDSA P-256 or RSA 2048."""
    if kind == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return ec.generate_private_key(ec.SECP256R1())


def default_hosts() -> list[str]:
    """What a server certificate names when no host is given: this machine, localhost,
    127.0.0.1."""
    names = [socket.gethostname(), "localhost", "127.0.0.1"]
    return list(dict.fromkeys(n for n in names if n))


def general_names(hosts: Sequence[str]) -> list[x509.GeneralName]:
    """subjectAltName entries for host names and IP addresses.

    Raises:
        PkiError: an entry is neither an IP address nor a DNS name.
    """
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            if not _HOST.match(host) or len(host) > 253:
                raise PkiError(f"{host!r} is neither an IP address nor a DNS name") from None
            names.append(x509.DNSName(host.rstrip(".")))
    return names


def build_ca(
    key: PrivateKey,
    *,
    name: str = "shopfloor CA",
    days: int = 3650,
    now: dt.datetime | None = None,
) -> x509.Certificate:
    """A self-signed CA certificate for ``key`` that may sign end-entity certificates only
    (path length 0)."""
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, name),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "shopfloor"),
        ]
    )
    start = (now or dt.datetime.now(dt.UTC)) - _BACKDATE
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(signing=True, encipherment=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )


def build_server_certificate(
    authority: Authority,
    key: PrivateKey,
    *,
    hosts: Sequence[str],
    days: int = 730,
    now: dt.datetime | None = None,
) -> x509.Certificate:
    """A TLS server certificate for ``hosts`` (DNS names and IP addresses), signed by
    ``authority``.

    Raises:
        PkiError: no hosts, or one that is neither a DNS name nor an IP address.
    """
    if not hosts:
        raise PkiError("a server certificate needs at least one host name or address")
    builder = _end_entity(authority, key, cn=hosts[0], days=days, now=now)
    return (
        builder.add_extension(x509.SubjectAlternativeName(general_names(hosts)), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(authority.key, hashes.SHA256())
    )


def build_client_certificate(
    authority: Authority,
    key: PrivateKey,
    *,
    edge_id: str,
    days: int = 730,
    now: dt.datetime | None = None,
) -> x509.Certificate:
    """An edge's TLS client certificate: CN and the URI ``urn:shopfloor:edge:<edge_id>``.

    Raises:
        PkiError: ``edge_id`` is not a valid edge id.
    """
    if not _EDGE_ID.match(edge_id):
        raise PkiError(
            f"{edge_id!r} is not an edge id (letters, digits, '_', '.', '-'; up to 64, "
            "starting with a letter or digit)"
        )
    alt = x509.SubjectAlternativeName([x509.UniformResourceIdentifier(EDGE_URI_PREFIX + edge_id)])
    return (
        _end_entity(authority, key, cn=edge_id, days=days, now=now)
        .add_extension(alt, critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(authority.key, hashes.SHA256())
    )


def _end_entity(
    authority: Authority, key: PrivateKey, *, cn: str, days: int, now: dt.datetime | None
) -> x509.CertificateBuilder:
    start = (now or dt.datetime.now(dt.UTC)) - _BACKDATE
    ca_public = authority.certificate.public_key()
    assert isinstance(ca_public, ec.EllipticCurvePublicKey | rsa.RSAPublicKey)
    return (
        x509.CertificateBuilder()
        .subject_name(
            x509.Name(
                [
                    x509.NameAttribute(NameOID.COMMON_NAME, cn),
                    x509.NameAttribute(NameOID.ORGANIZATION_NAME, "shopfloor"),
                ]
            )
        )
        .issuer_name(authority.certificate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            _key_usage(signing=False, encipherment=isinstance(key, rsa.RSAPrivateKey)),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_public), critical=False
        )
    )


def _key_usage(*, signing: bool, encipherment: bool) -> x509.KeyUsage:
    """CA: sign certificates and CRLs. End entity: sign handshakes (and, for RSA key
    exchange by older peers, encipher keys)."""
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=encipherment,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=signing,
        crl_sign=signing,
        encipher_only=False,
        decipher_only=False,
    )


def edge_of_certificate(cert: x509.Certificate) -> str | None:
    """The edge a client certificate names: its ``urn:shopfloor:edge:`` URI, else its CN."""
    try:
        alt = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        alt = None
    if alt is not None:
        for uri in alt.get_values_for_type(x509.UniformResourceIdentifier):
            if uri.startswith(EDGE_URI_PREFIX) and len(uri) > len(EDGE_URI_PREFIX):
                return uri[len(EDGE_URI_PREFIX) :]
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if names and isinstance(names[0].value, str) and names[0].value:
        return names[0].value
    return None


# ----------------------------------------------------------------------- files
def write_private_key(path: Path, key: PrivateKey, *, replace: bool = False) -> None:
    """Write ``key`` (PEM, PKCS#8, unencrypted) with mode 0600 from its creation.

    Args:
        replace: write a new file and rename it over an existing one; else an existing
            file is an error.

    Raises:
        PkiError: the file exists (without ``replace``) or cannot be written.
    """
    data = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    _write_new(path, data, mode=0o600, replace=replace)


def write_certificates(
    path: Path, certificates: Sequence[x509.Certificate], *, replace: bool = False
) -> None:
    """Write certificates as one PEM file (mode 0644), first one first.

    Raises:
        PkiError: the file exists (without ``replace``) or cannot be written.
    """
    data = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certificates)
    _write_new(path, data, mode=0o644, replace=replace)


def _write_new(path: Path, data: bytes, *, mode: int, replace: bool) -> None:
    target = path.with_name(path.name + ".new") if replace else path
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        if replace:
            target.unlink(missing_ok=True)
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        with os.fdopen(fd, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        if replace:
            os.replace(target, path)
    except FileExistsError as err:
        raise PkiError(f"{path} exists: not overwritten") from err
    except OSError as err:
        raise PkiError(f"cannot write {path}: {err.strerror or err}") from err


def load_authority(directory: Path) -> Authority:
    """The CA in ``directory`` (``ca.pem`` and ``ca.key.pem``).

    Raises:
        PkiError: a file is missing or unreadable, or the key is not the certificate's.
    """
    cert_path, key_path = directory / CA_CERT, directory / CA_KEY
    try:
        certificate = x509.load_pem_x509_certificate(cert_path.read_bytes())
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except FileNotFoundError as err:
        raise PkiError(
            f"no CA in {directory}: {err.filename} is missing (make one with "
            f"`shopfloor certs init --dir {directory}`)"
        ) from err
    except OSError as err:
        raise PkiError(f"cannot read {err.filename}: {err.strerror}") from err
    except (ValueError, TypeError) as err:
        raise PkiError(f"the CA in {directory} cannot be loaded: {err}") from err
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise PkiError(f"{key_path}: only ECDSA and RSA keys are supported")
    if _spki(key) != _spki(certificate):
        raise PkiError(f"{key_path} is not the private key of {cert_path}")
    return Authority(certificate, key)


def _spki(item: PrivateKey | x509.Certificate) -> bytes:
    public = item.public_key()
    assert isinstance(public, ec.EllipticCurvePublicKey | rsa.RSAPublicKey)
    return public.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


# ----------------------------------------------------------------------- verbs
def init_ca(
    directory: Path,
    *,
    hosts: Sequence[str],
    key_type: KeyType = "ec",
    ca_days: int = 3650,
    days: int = 730,
) -> tuple[Issued, Issued]:
    """Make a CA in ``directory`` and a server certificate for ``hosts``.

    Returns:
        The CA's files and the server certificate's files.

    Raises:
        PkiError: ``directory`` already holds a CA (it is never overwritten), a host is
            invalid, or a file cannot be written.
    """
    existing = [directory / n for n in (CA_CERT, CA_KEY) if (directory / n).exists()]
    if existing:
        raise PkiError(
            f"{existing[0]} exists: {directory} already holds a CA, which is never "
            "overwritten (a new CA would orphan every certificate issued from it); use "
            "`shopfloor certs issue-server` for a new server certificate, or another --dir"
        )
    general_names(hosts)  # refuse bad names before anything is written
    key = new_key(key_type)
    name = f"shopfloor CA {socket.gethostname()}".strip()[:64]
    authority = Authority(build_ca(key, name=name, days=ca_days), key)
    write_private_key(directory / CA_KEY, key)  # first: O_EXCL guards against a race
    write_certificates(directory / CA_CERT, [authority.certificate])
    ca = Issued(directory / CA_CERT, directory / CA_KEY)
    return ca, issue_server(directory, hosts=hosts, key_type=key_type, days=days)


def issue_server(
    directory: Path, *, hosts: Sequence[str], key_type: KeyType = "ec", days: int = 730
) -> Issued:
    """A (new) server certificate for ``hosts`` from the CA in ``directory``, replacing
    ``server.pem`` and ``server.key.pem``; the file holds the CA certificate after the
    server's.

    Raises:
        PkiError: no CA there, a host is invalid, or a file cannot be written.
    """
    authority = load_authority(directory)
    key = new_key(key_type)
    cert = build_server_certificate(authority, key, hosts=hosts, days=days)
    write_private_key(directory / SERVER_KEY, key, replace=True)
    write_certificates(directory / SERVER_CERT, [cert, authority.certificate], replace=True)
    return Issued(directory / SERVER_CERT, directory / SERVER_KEY, tuple(hosts))


def issue_client(
    directory: Path,
    edge_id: str,
    *,
    out: Path | None = None,
    key_type: KeyType = "ec",
    days: int = 730,
    replace: bool = False,
) -> Issued:
    """An edge's client certificate from the CA in ``directory``, written as
    ``<out>/<edge_id>.pem`` and ``<edge_id>.key.pem`` (``out``: ``directory/clients``).

    Raises:
        PkiError: no CA there, an invalid edge id, files that exist (without
            ``replace``), or a file cannot be written.
    """
    authority = load_authority(directory)
    key = new_key(key_type)
    cert = build_client_certificate(authority, key, edge_id=edge_id, days=days)
    folder = out if out is not None else directory / CLIENTS
    cert_path, key_path = folder / f"{edge_id}.pem", folder / f"{edge_id}.key.pem"
    if not replace:
        for path in (cert_path, key_path):
            if path.exists():
                raise PkiError(f"{path} exists: not overwritten (give --force to replace it)")
    write_private_key(key_path, key, replace=replace)
    write_certificates(cert_path, [cert], replace=replace)
    return Issued(cert_path, key_path, (EDGE_URI_PREFIX + edge_id,))
