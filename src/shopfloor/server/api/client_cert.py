"""Edges identified by their TLS client certificate (``[server.tls] client_ca``).

uvicorn does not put the peer's certificate into the ASGI scope, so the server runs
:class:`ClientCertH11Protocol`: uvicorn's own h11 protocol that, once per connection, reads
the certificate the client presented and adds the ASGI TLS extension
(``scope["extensions"]["tls"]``: ``client_cert_chain``, ``client_cert_name``) to every
request of that connection. The handshake has already verified the certificate against
``client_ca`` (``CERT_OPTIONAL``: a client may present none, never an unverified one).

An edge's identity is the certificate's subjectAltName URI ``urn:shopfloor:edge:<id>``
(what ``shopfloor certs issue-client`` writes), or, without one, its common name.
"""

from __future__ import annotations

import functools
import ssl
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from cryptography import x509
from uvicorn.protocols.http.h11_impl import H11Protocol

from shopfloor.pki import edge_of_certificate

__all__ = ["ClientCertH11Protocol", "certificate_edge"]

_Scope = MutableMapping[str, Any]
_Asgi = Callable[[_Scope, Any, Any], Awaitable[None]]


@functools.lru_cache(maxsize=1024)
def _edge_of_pem(pem: str) -> str | None:
    """Parsed once per certificate: an edge sends many requests with the same one."""
    return edge_of_certificate(x509.load_pem_x509_certificate(pem.encode()))


def certificate_edge(scope: _Scope) -> str | None:
    """The edge whose verified client certificate the request's connection presented."""
    tls = scope.get("extensions", {}).get("tls")
    if not tls:
        return None
    chain = tls.get("client_cert_chain") or []
    return _edge_of_pem(chain[0]) if chain else None


class ClientCertH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with the ASGI TLS extension for client certificates."""

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        ssl_object: ssl.SSLObject | None = transport.get_extra_info("ssl_object")
        if ssl_object is None:
            return
        der = ssl_object.getpeercert(binary_form=True)
        if not der:
            return
        cert = x509.load_der_x509_certificate(der)
        extension = {
            "server_cert": None,
            "client_cert_chain": [ssl.DER_cert_to_PEM_cert(der)],
            "client_cert_name": cert.subject.rfc4514_string(),
            "client_cert_error": None,
            "tls_version": None,
            "cipher_suite": None,
        }
        self.app = _with_tls(self.app, extension)


def _with_tls(app: _Asgi, extension: dict[str, Any]) -> _Asgi:
    async def wrapped(scope: _Scope, receive: Any, send: Any) -> None:
        scope.setdefault("extensions", {})["tls"] = extension
        await app(scope, receive, send)

    return wrapped
