"""``[server.tls]``: HTTPS for the platform, and client certificates for edges.

    [server.tls]
    cert_file = "tls/server.pem"       # from `shopfloor certs init --dir tls`
    key_file = "tls/server.key.pem"
    client_ca = "tls/ca.pem"           # optional: edges may log in with a client certificate

The server's context is built here rather than by uvicorn's ``ssl_*`` options because
uvicorn's context accepts whatever the local OpenSSL allows (TLS 1.0 on some systems) and
cannot say which setting is wrong. Every failure names its key: an unreadable file, a file
that is no certificate, an expired certificate, a key that is not the certificate's, a key
password that is unset or wrong.

TLS 1.2 is the minimum (1.0 and 1.1 are refused with a ``protocol version`` alert), and
TLS 1.2 uses only forward-secret AEAD suites (ECDHE with AES-GCM or ChaCha20); TLS 1.3's
suites are all of that kind already.
"""

from __future__ import annotations

import datetime as dt
import os
import ssl
from pathlib import Path
from typing import Final

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from pydantic import BaseModel, ConfigDict, Field, field_validator

from shopfloor.errors import ConfigError

__all__ = ["SERVER_CIPHERS", "ServerTlsSection", "TlsFileError"]

SERVER_CIPHERS: Final = "ECDHE+AESGCM:ECDHE+CHACHA20"
"""TLS 1.2 suites the server offers: forward secrecy and authenticated encryption only."""


class TlsFileError(ConfigError):
    """A TLS setting names a file that cannot be used.

    Attributes:
        key: the setting, below ``server.tls`` (``cert_file``, ``key_file`` …).
        reason: what is wrong with it.
    """

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(f"server.tls.{key}: {reason}")
        self.key = key
        self.reason = reason


class ServerTlsSection(BaseModel):
    """The platform's certificate and key, and the CA of its edges' client certificates."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    cert_file: Path = Field(
        description="Serve HTTPS with this certificate (PEM: the server's own, then any "
        "intermediate CA certificates); relative to the configuration file.",
    )
    key_file: Path = Field(
        description="Private key of `cert_file` (PEM, mode 0600); relative to the "
        "configuration file.",
    )
    key_password_env: str | None = Field(
        None,
        description="Name of the environment variable holding the password of an "
        "encrypted `key_file`; empty: the key is not encrypted.",
    )
    client_ca: Path | None = Field(
        None,
        description="PEM file of the CA whose client certificates identify edges "
        "(`shopfloor certs issue-client`); when set, edge write requests need such a "
        "certificate or an edge token. A presented certificate is always verified. "
        "Relative to the configuration file.",
    )

    @field_validator("key_password_env", "client_ca", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        return None if value == "" else value

    def relative_to(self, base: Path) -> ServerTlsSection:
        """A copy whose relative files are made absolute against ``base``."""
        update = {
            name: base / value
            for name in ("cert_file", "key_file", "client_ca")
            if isinstance(value := getattr(self, name), Path) and not value.is_absolute()
        }
        return self.model_copy(update=update) if update else self

    def ssl_context(self, *, now: dt.datetime | None = None) -> ssl.SSLContext:
        """The server's TLS context; reads the files: call it off the event loop.

        Args:
            now: the time to check the certificate's validity against (default: now).

        Raises:
            TlsFileError: a file cannot be used, naming its key.
        """
        chain = _certificates(self.cert_file, now=now or dt.datetime.now(dt.UTC))
        password = self._password()
        key_pem = _read(self.key_file, "key_file")
        try:
            key = serialization.load_pem_private_key(key_pem, password=password)
        except TypeError as err:  # encrypted without a password, or a password for a plain key
            if password is None:
                raise TlsFileError(
                    "key_file",
                    f"{self.key_file} is encrypted: set key_password_env to the variable "
                    "holding its password",
                ) from err
            raise TlsFileError(
                "key_password_env", f"{self.key_file} is not encrypted: remove key_password_env"
            ) from err
        except ValueError as err:
            if password is not None and b"ENCRYPTED" in key_pem:
                raise TlsFileError(
                    "key_password_env",
                    f"the password in ${self.key_password_env} does not decrypt {self.key_file}",
                ) from err
            raise TlsFileError("key_file", f"{self.key_file} is not a PEM private key") from err
        if _public_der(key.public_key()) != _public_der(chain[0].public_key()):
            raise TlsFileError(
                "key_file", f"{self.key_file} is not the private key of cert_file {self.cert_file}"
            )
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.set_ciphers(SERVER_CIPHERS)
        context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE
        context.options |= ssl.OP_NO_RENEGOTIATION
        try:
            context.load_cert_chain(self.cert_file, self.key_file, password=password or None)
        except (OSError, ssl.SSLError) as err:  # checked above: only a race gets here
            raise TlsFileError("cert_file", f"cannot load {self.cert_file}: {err}") from err
        if self.client_ca is not None:
            _read(self.client_ca, "client_ca")
            try:
                context.load_verify_locations(cafile=self.client_ca)
            except (OSError, ssl.SSLError) as err:
                raise TlsFileError(
                    "client_ca", f"{self.client_ca} is not a PEM CA certificate: {err}"
                ) from err
            # optional: browsers have no client certificate; edge routes check for one
            context.verify_mode = ssl.CERT_OPTIONAL
        return context

    def expires(self) -> dt.datetime:
        """When the server's certificate expires; reads the file.

        Raises:
            TlsFileError: the file cannot be read or holds no certificate.
        """
        data = _read(self.cert_file, "cert_file")
        try:
            return x509.load_pem_x509_certificates(data)[0].not_valid_after_utc
        except ValueError as err:
            raise TlsFileError("cert_file", f"{self.cert_file} is not a PEM certificate") from err

    def file_problems(self) -> list[tuple[tuple[str, ...], str]]:
        """The TLS settings that cannot be used, as (key path, message): every unreadable
        file, else the first problem of their contents."""
        problems: list[tuple[tuple[str, ...], str]] = []
        for key in ("cert_file", "key_file", "client_ca"):
            path = getattr(self, key)
            if path is None:
                continue
            try:
                _read(path, key)
            except TlsFileError as err:
                problems.append((("server", "tls", err.key), err.reason))
        if problems:
            return problems
        try:
            self.ssl_context()
        except TlsFileError as err:
            return [(("server", "tls", err.key), err.reason)]
        return []

    def _password(self) -> bytes | None:
        if self.key_password_env is None:
            return None
        value = os.environ.get(self.key_password_env)
        if not value:
            raise TlsFileError(
                "key_password_env", f"environment variable {self.key_password_env} is not set"
            )
        return value.encode()


def _read(path: Path, key: str) -> bytes:
    try:
        return path.read_bytes()
    except IsADirectoryError as err:
        raise TlsFileError(key, f"cannot read {path}: a folder, not a file") from err
    except OSError as err:
        raise TlsFileError(key, f"cannot read {path}: {err.strerror or err}") from err


def _certificates(path: Path, *, now: dt.datetime) -> list[x509.Certificate]:
    """The PEM chain in ``path``, its first certificate valid at ``now``."""
    data = _read(path, "cert_file")
    try:
        chain = x509.load_pem_x509_certificates(data)
    except ValueError as err:
        raise TlsFileError("cert_file", f"{path} is not a PEM certificate: {err}") from err
    leaf = chain[0]
    if leaf.not_valid_after_utc < now:
        raise TlsFileError(
            "cert_file",
            f"the certificate in {path} expired on {leaf.not_valid_after_utc:%Y-%m-%d %H:%M}Z: "
            "issue a new one (shopfloor certs issue-server --dir …)",
        )
    if leaf.not_valid_before_utc > now:
        raise TlsFileError(
            "cert_file",
            f"the certificate in {path} is valid only from "
            f"{leaf.not_valid_before_utc:%Y-%m-%d %H:%M}Z (is this machine's clock right?)",
        )
    return chain


def _public_der(key: object) -> bytes:
    public_bytes = getattr(key, "public_bytes", None)
    if public_bytes is None:  # pragma: no cover - every key type cryptography loads has it
        return b""
    der: bytes = public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return der
