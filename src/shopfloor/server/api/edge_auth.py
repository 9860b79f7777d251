"""Who is sending: the per-edge credential on the routes edges write to.

With ``[ingest] edge_credentials`` set, ``POST /api/v1/ingest``, ``PUT /api/v1/tags`` and
``PUT /api/v1/edges/{id}/status`` need ``Authorization: Bearer <token>``. A missing or
unknown token is answered ``401`` (with ``WWW-Authenticate: Bearer``) before the body is
read; a known token used for another edge's batch or status, or for a batch that names
no edge, ``403``. Both are "the credential is wrong" to an edge: it backs off and keeps
its batches (docs/wire.md). Read endpoints stay open: users and roles come later.

With ``[server.tls] client_ca`` set, an edge may instead present a client certificate
signed by that CA (:mod:`~shopfloor.server.api.client_cert`): the certificate names the
edge, and it wins over any token; a token of another edge on the same request is ``403``.
With ``client_ca`` set, a write request with neither a certificate nor (when tokens are
configured) a known token is ``401``.

Without credentials or ``client_ca`` configured every route behaves as before
(``identity`` is None).
"""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import Depends, FastAPI, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from shopfloor.server.api.client_cert import certificate_edge
from shopfloor.server.api.errors import ApiError
from shopfloor.server.api.schemas import ErrorEnvelope
from shopfloor.server.ingest.credentials import EdgeCredentials

__all__ = [
    "AUTH_RESPONSES",
    "EDGE_KEY",
    "EdgeIdentity",
    "edge_identity",
    "install_edge_credentials",
    "require_edge",
    "status_identity",
]

logger = logging.getLogger(__name__)

_STATE_KEY = "edge_credentials"
EDGE_KEY = "edge"
"""The key of the identified edge in the request's state (the audit of a 403 names it)."""
_CERTS_KEY = "edge_client_certificates"
_CHALLENGE = {"WWW-Authenticate": "Bearer"}
_MAX_WARNED = 1024
"""Most distinct refused senders remembered for log-once (then the memory starts over)."""

_bearer = HTTPBearer(
    auto_error=False,
    scheme_name="EdgeToken",
    description="The edge's token from `shopfloor edge credential`; required when the "
    "platform sets `[ingest] edge_credentials`.",
)

AUTH_RESPONSES: dict[int | str, dict[str, object]] = {
    401: {
        "model": ErrorEnvelope,
        "description": "Credentials are required and the request has no known edge token "
        "(`WWW-Authenticate: Bearer`) or, with `[server.tls] client_ca`, no client "
        "certificate. Nothing was read or stored.",
    },
    403: {
        "model": ErrorEnvelope,
        "description": "The token or client certificate belongs to another edge than the one "
        "named, or the batch names no edge. Nothing was stored.",
    },
}
"""OpenAPI answers of the routes that take an edge's credential."""

_warned: set[tuple[str, ...]] = set()


def install_edge_credentials(
    app: FastAPI, credentials: EdgeCredentials | None, *, client_certificates: bool = False
) -> None:
    """Require edge tokens on ``app``'s write routes (None: no credentials required).

    Args:
        client_certificates: the server verifies client certificates (``client_ca``): a
            write request needs one, or a token when ``credentials`` are given.
    """
    setattr(app.state, _STATE_KEY, credentials)
    setattr(app.state, _CERTS_KEY, client_certificates)


async def edge_identity(
    request: Request,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> str | None:
    """FastAPI dependency: the edge the request's token belongs to.

    Returns:
        The edge id (from the client certificate, else the token), or None when the
        platform requires no credentials.

    Raises:
        ApiError: 401 when a credential is required and missing or unknown; 403 when the
            certificate and the token name different edges.
    """
    credentials: EdgeCredentials | None = getattr(request.app.state, _STATE_KEY, None)
    client = request.client.host if request.client else "unknown"
    certified = certificate_edge(request.scope)
    if certified is not None:
        request.scope.setdefault("state", {})[EDGE_KEY] = certified
        if credentials is not None and bearer is not None:
            token_edge = await credentials.identify(bearer.credentials)
            if token_edge is not None and token_edge != certified:
                message = (
                    f"the client certificate is edge {certified!r}'s, the token edge "
                    f"{token_edge!r}'s"
                )
                _warn_once(("mixed", client, certified, token_edge), "refused (403): %s", message)
                raise ApiError(403, "forbidden", "authorization", message)
        return certified
    if credentials is None:
        if getattr(request.app.state, _CERTS_KEY, False):
            _warn_once(
                ("no certificate", client),
                "%s %s from %s without a client certificate: refused (401)",
                request.method,
                request.url.path,
                client,
            )
            raise ApiError(
                401,
                "unauthorized",
                "authorization",
                "this platform requires an edge client certificate signed by its "
                "server.tls.client_ca (the edge's uplink.cert_file and uplink.key_file)",
            )
        return None
    if bearer is None:
        _warn_once(
            ("no token", client),
            "%s %s from %s without an edge token: refused (401)",
            request.method,
            request.url.path,
            client,
        )
        raise ApiError(
            401,
            "unauthorized",
            "authorization",
            "this platform requires an edge credential: send Authorization: Bearer <token> "
            "(the edge's uplink.token_env or uplink.token_file)",
            headers=_CHALLENGE,
        )
    edge = await credentials.identify(bearer.credentials)
    if edge is not None:
        request.scope.setdefault("state", {})[EDGE_KEY] = edge
    if edge is None:
        _warn_once(
            ("unknown token", client),
            "%s %s from %s with an unknown edge token: refused (401)",
            request.method,
            request.url.path,
            client,
        )
        raise ApiError(
            401,
            "unauthorized",
            "authorization",
            "the token is not one of this platform's edge credentials (revoked, or never "
            "issued: shopfloor edge credential EDGE_ID --file FILE)",
            headers=_CHALLENGE,
        )
    return edge


EdgeIdentity = Annotated[str | None, Depends(edge_identity)]
"""Route parameter type: the authenticated edge, or None without credentials configured."""


def require_edge(identity: str | None, edge: str | None, *, what: str = "send batches for") -> None:
    """Refuse (403) a request whose credential is not the named ``edge``'s.

    Args:
        identity: from :data:`EdgeIdentity` (None: credentials are not required).
        edge: the edge the request speaks for (the batch's ``edge``, the status path's).
        what: what the request does, for the message.

    Raises:
        ApiError: 403 when the edges differ or the batch names none.
    """
    if identity is None or identity == edge:
        return
    if edge is None:
        message = "credentials are required: the batch must name its edge"
    else:
        message = f"the credential of edge {identity!r} may not {what} edge {edge!r}"
    _warn_once(
        ("forbidden", identity, edge or "", what),
        "refused (403) a request with the credential of edge %s: %s",
        identity,
        message,
    )
    raise ApiError(403, "forbidden", "edge", message)


async def status_identity(edge_id: str, identity: EdgeIdentity) -> str | None:
    """FastAPI dependency for ``/edges/{edge_id}/…`` routes: only that edge's token
    (403 otherwise), checked before the body is validated."""
    require_edge(identity, edge_id, what="report the status of")
    return identity


def _warn_once(key: tuple[str, ...], message: str, *args: object) -> None:
    """Log a refusal once per sender and kind: an edge retries every few seconds with the
    same token, and one line tells the operator as much as a thousand."""
    if key in _warned:
        return
    if len(_warned) >= _MAX_WARNED:
        _warned.clear()
    _warned.add(key)
    logger.warning(message, *args)
