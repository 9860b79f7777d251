"""Deny by default: who a request is, and whether it may call the route it reached.

Every route declares one permission with a dependency: ``dependencies=[READ]`` and the
like (:class:`Require`), or :data:`PUBLIC` for the few that anybody may call (``/healthz``,
the login). ``tests/unit/server/api/test_permissions.py`` walks ``app.routes`` and fails
on a route that declares neither, so a new route cannot be open by accident.

A request is authenticated by, in this order:

* ``Authorization: Bearer sft_…``: an API token (``POST /api/v1/tokens``, ``shopfloor
  tokens create``). No CSRF token: a browser never sends this header by itself.
* the ``shopfloor_session`` cookie of a login. Then every unsafe request (``POST``,
  ``PUT``, ``PATCH``, ``DELETE``) must also send the session's CSRF token as
  ``X-CSRF-Token`` (the page reads it from the ``shopfloor_csrf`` cookie or from
  ``GET /api/v1/auth/me``); missing or wrong: 403.

No credential: 401 (a page route redirects to ``/login`` instead); a credential without
the permission: 403. The edges' routes (:data:`INGEST`) keep the per-edge tokens of
``[ingest] edge_credentials`` when those are configured (:mod:`.edge_auth`); without them
they take an API token or session that grants ``ingest``.
The websocket is authenticated the same way, and refuses a browser whose ``Origin`` is
not the server's own (cross-site websocket hijacking rides on cookies).
"""

from __future__ import annotations

import contextlib
import hmac
from typing import Any, NoReturn
from urllib.parse import quote, urlsplit

from fastapi import Depends, FastAPI
from starlette.exceptions import WebSocketException
from starlette.requests import HTTPConnection, Request
from starlette.responses import RedirectResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from shopfloor.server.api.errors import ApiError
from shopfloor.server.security.actor import PRINCIPAL_KEY
from shopfloor.server.security.roles import Permission
from shopfloor.server.security.service import Auth, Principal
from shopfloor.server.security.store import TOKEN_PREFIX, SecurityError

__all__ = [
    "ADMIN",
    "AUTHENTICATED",
    "CSRF_COOKIE",
    "CSRF_HEADER",
    "ENGINEER",
    "INGEST",
    "OPERATE",
    "PAGE",
    "PRINCIPAL_KEY",
    "PUBLIC",
    "READ",
    "SESSION",
    "SESSION_COOKIE",
    "WS_DENIED_KEY",
    "AuthenticateEarly",
    "LoginRedirect",
    "Public",
    "Require",
    "auth_of",
    "install_auth",
    "permission_of",
    "principal_of",
]

SESSION_COOKIE = "shopfloor_session"
CSRF_COOKIE = "shopfloor_csrf"
CSRF_HEADER = "X-CSRF-Token"
_UNSAFE = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_STATE_KEY = "auth"
_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="shopfloor"'}
_POLICY_VIOLATION = 1008


class LoginRedirect(Exception):  # noqa: N818 - control flow of a page route, not an error
    """A page was asked for without a login: answered with a redirect to ``/login``."""

    def __init__(self, target: str) -> None:
        super().__init__(target)
        self.target = target


def install_auth(app: FastAPI, auth: Auth) -> None:
    """Authenticate ``app``'s requests against ``auth``'s users, sessions and tokens."""
    setattr(app.state, _STATE_KEY, auth)
    app.add_exception_handler(LoginRedirect, _redirect)


async def _redirect(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, LoginRedirect)
    return RedirectResponse(exc.target, status_code=303)


def auth_of(conn: HTTPConnection) -> Auth:
    """The app's :class:`Auth` (installed by :func:`install_auth`)."""
    auth = getattr(conn.app.state, _STATE_KEY, None)
    if auth is None:  # pragma: no cover - create_app always installs one
        raise ApiError(503, "unavailable", None, "authentication is not configured")
    return auth  # type: ignore[no-any-return]


def _bearer(conn: HTTPConnection) -> str | None:
    header = conn.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    return value.strip() if scheme.lower() == "bearer" and value.strip() else None


async def principal_of(conn: HTTPConnection) -> Principal | None:
    """Who the request is (cached for the request), or None without a valid credential.

    Raises:
        ApiError: 401 for a bearer token that is not a live API token (unknown, revoked,
            expired): a client that sends one means to use it, so no cookie is tried.
    """
    state = conn.scope.setdefault("state", {})
    if PRINCIPAL_KEY in state:
        return state[PRINCIPAL_KEY]  # type: ignore[no-any-return]
    auth = auth_of(conn)
    principal: Principal | None = None
    token = _bearer(conn)
    if token is not None:
        # an edge's credential (not an API token) is no user: no lookup on the ingest path
        principal = await auth.token_principal(token) if token.startswith(TOKEN_PREFIX) else None
        if principal is None:
            raise ApiError(
                401,
                "unauthorized",
                "authorization",
                "the bearer token is not a valid API token (unknown, revoked or expired)",
                headers=_CHALLENGE,
            )
    else:
        session = conn.cookies.get(SESSION_COOKIE)
        if session:
            principal = await auth.session_principal(session)
    state[PRINCIPAL_KEY] = principal
    return principal


def _same_origin(conn: HTTPConnection) -> bool:
    origin = conn.headers.get("origin")
    if origin is None:  # not a browser: scripts send no Origin
        return True
    host = conn.headers.get("host", "")
    return urlsplit(origin).netloc.lower() == host.lower()


class Require:
    """Dependency: the request must hold ``permission`` (None: be authenticated at all).

    Args:
        permission: what the route needs.
        page: a page of the dashboard: redirect to the login page instead of a 401.
        session: only a logged-in user (not an API token) may call it.
    """

    def __init__(
        self, permission: Permission | None, *, page: bool = False, session: bool = False
    ) -> None:
        self.permission = permission
        self.page = page
        self.session = session

    def __repr__(self) -> str:
        return f"Require({self.permission})"

    async def __call__(self, conn: HTTPConnection) -> Principal | None:
        state = conn.app.state
        edges_identified = getattr(state, "edge_credentials", None) is not None or getattr(
            state, "edge_client_certificates", False
        )
        if self.permission is Permission.INGEST and edges_identified:
            return None  # the edge's token or client certificate (edge_auth) decides
        websocket = conn.scope["type"] == "websocket"
        if websocket and not _same_origin(conn):
            with contextlib.suppress(ApiError):  # who it was, for the audit of the refusal
                await principal_of(conn)
            _deny(conn, "the websocket's Origin is not this server")
        try:
            principal = await principal_of(conn)
        except ApiError as err:
            if websocket:
                await _close(conn, err.message)
            raise
        if principal is None:
            if websocket:
                await _close(conn, "log in first (or send an API token)")
            if self.page:
                path = conn.url.path + (f"?{conn.url.query}" if conn.url.query else "")
                raise LoginRedirect(f"/login?next={quote(path, safe='/')}")
            raise ApiError(
                401,
                "unauthorized",
                "authorization",
                "log in (POST /api/v1/auth/login) or send Authorization: Bearer <API token>",
                headers=_CHALLENGE,
            )
        if self.session and principal.kind != "session":
            _deny(conn, "an API token cannot do this: log in as a user")
        method = conn.scope.get("method", "GET")
        if principal.kind == "session" and method in _UNSAFE:
            sent = conn.headers.get(CSRF_HEADER, "")
            if not sent or not hmac.compare_digest(sent, principal.csrf or ""):
                _deny(
                    conn,
                    f"missing or wrong {CSRF_HEADER} header: send the session's CSRF token "
                    f"(the {CSRF_COOKIE} cookie) with every change",
                    field=CSRF_HEADER,
                )
        if self.permission is not None and principal.mfa_pending:
            _deny(
                conn,
                "this server requires a second factor for your role: set one up first "
                "(POST /api/v1/auth/totp, then /api/v1/auth/totp/confirm)",
            )
        if self.permission is not None and not principal.may(self.permission):
            _deny(
                conn,
                f"{principal.name} ({principal.role}) lacks the permission "
                f"{self.permission.value!r} this needs",
            )
        return principal


WS_DENIED_KEY = "ws_denied"
"""Where a refused websocket handshake leaves its reason in the state, for the audit: a
refusal for who it is (no or a bad credential, a 401 on HTTP) leaves none."""


def _deny(conn: HTTPConnection, message: str, *, field: str | None = None) -> NoReturn:
    """Refuse with 403 (a websocket: refuse the handshake, marked as a denial)."""
    if conn.scope["type"] == "websocket":
        conn.scope.setdefault("state", {})[WS_DENIED_KEY] = message
        raise WebSocketException(code=_POLICY_VIOLATION, reason=message[:120])
    raise ApiError(403, "forbidden", field, message)


async def _close(conn: HTTPConnection, reason: str) -> Any:
    """Refuse a websocket handshake (the client sees a 403) and stop the dependency."""
    raise WebSocketException(code=_POLICY_VIOLATION, reason=reason[:120])


class Public:
    """Dependency that marks a route as open to anybody (the route walk accepts it)."""

    def __repr__(self) -> str:
        return "Public()"

    async def __call__(self) -> None:
        return None


PUBLIC = Depends(Public())
"""``dependencies=[PUBLIC]``: the route needs no credential."""
AUTHENTICATED = Depends(Require(None))
"""Any logged-in user or API token."""
SESSION = Depends(Require(None, session=True))
"""Any logged-in user (not an API token): for one's own password."""
READ = Depends(Require(Permission.READ))
OPERATE = Depends(Require(Permission.OPERATE))
ENGINEER = Depends(Require(Permission.ENGINEER))
INGEST = Depends(Require(Permission.INGEST))
ADMIN = Depends(Require(Permission.ADMIN))
PAGE = Depends(Require(Permission.READ, page=True))
"""A dashboard page: ``read``, and a redirect to the login page without a login."""


class AuthenticateEarly:
    """Find out who a write request is before its route reads the body (pure ASGI).

    FastAPI parses a JSON body before it runs a route's dependencies, so a malformed body
    is refused (422) before :class:`Require` has looked at the credential. The audit of
    that refusal should still name who sent it: this resolves the principal first (a bad
    credential is left for the route's dependency to refuse). It grants nothing.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope.get("method") in _UNSAFE:
            # a bad credential is refused by the route's own Require, with the envelope,
            # and so is an unavailable security store (a 503, by the route's handlers)
            with contextlib.suppress(ApiError, SecurityError):
                await principal_of(HTTPConnection(scope))
        await self.app(scope, receive, send)


def permission_of(dependencies: list[Any]) -> list[Require | Public]:
    """The permission markers among a route's dependency callables."""
    return [d for d in dependencies if isinstance(d, Require | Public)]
