"""Every refused request (a 403) leaves an ``access.denied`` entry in the audit log.

One place for all of them, whatever refused: a role without the route's permission, a
missing CSRF token, an API token on a route for users, another site's object (site
scoping), an edge's credential used for another edge, a websocket refused for its role
or its ``Origin``. The entry says who (the principal's name, its token's id, or
``edge:ID``), what (method, route template, the concrete path, the object the refusal
named: a tag's ISA-95 path as the target), when and from which address, with the error
envelope the client got. A 401 (no or a bad credential) is no denial: that is the noise
of anonymous scanners; failed logins have their own entries (``auth.login``), and an
audited write's 401 is entered under its action by
:class:`~.audit_trail.AuditMiddleware`, coalesced the same way.

A 403 that its route audits itself under a more precise action (a wrong current password
is ``user.password`` rejected) is not entered twice. An audited write refused with 403
is entered here, as ``access.denied`` with its action in ``detail.action``, not also by
:class:`~.audit_trail.AuditMiddleware`.

Repeats of one denial (same who, address, method and route) are coalesced by
:meth:`AuditLog.deny <shopfloor.server.security.audit.AuditLog.deny>`, so a flood of
refused requests writes a bounded number of rows. The entry is written before the 403
leaves; when the log cannot be written the refusal still goes out (it claims nothing
done) and the failure is logged.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shopfloor.server.api.audit_trail import UNNAMED, action_of
from shopfloor.server.api.auth import WS_DENIED_KEY
from shopfloor.server.api.edge_auth import EDGE_KEY
from shopfloor.server.api.errors import DENIED_TARGET_KEY
from shopfloor.server.security import AuditError, AuditLog
from shopfloor.server.security.actor import PRINCIPAL_KEY

__all__ = ["SELF_AUDITED_KEY", "DenialAudit"]

logger = logging.getLogger(__name__)

SELF_AUDITED_KEY = "self_audited"
"""Set in the request's state by a route that wrote its own entry for the request."""
_MAX_ERROR_BYTES = 16 * 1024


class DenialAudit:
    """Audit each 403 answer and refused websocket handshake in ``log`` (pure ASGI)."""

    def __init__(self, app: ASGIApp, log: AuditLog) -> None:
        self.app = app
        self.log = log

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await self._http(scope, receive, send)
        elif scope["type"] == "websocket":
            await self._websocket(scope, receive, send)
        else:
            await self.app(scope, receive, send)

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        held: list[Message] = []
        denied = False

        async def watch(message: Message) -> None:
            nonlocal denied
            if message["type"] == "http.response.start":
                denied = int(message["status"]) == 403
            if not denied:
                await send(message)
                return
            held.append(message)  # a 403 is a small envelope: hold it until audited
            if message["type"] == "http.response.body" and not message.get("more_body"):
                body = b"".join(m.get("body", b"") for m in held[1:])
                await self._record(scope, error=_error_of(body))
                for m in held:
                    await send(m)
                held.clear()

        await self.app(scope, receive, watch)

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        accepted = False

        async def watch(message: Message) -> None:
            nonlocal accepted
            if message["type"] == "websocket.accept":
                accepted = True
            elif message["type"] == "websocket.close" and not accepted:
                reason = (scope.get("state") or {}).get(WS_DENIED_KEY)
                if isinstance(reason, str):  # else refused for who it is: a 401
                    await self._record(scope, error={"code": "forbidden", "message": reason})
            await send(message)

        await self.app(scope, receive, watch)

    async def _record(self, scope: Scope, *, error: dict[str, Any]) -> None:
        state = scope.get("state") or {}
        if state.get(SELF_AUDITED_KEY):
            return
        principal = state.get(PRINCIPAL_KEY)
        name = getattr(principal, "name", None)
        edge = state.get(EDGE_KEY)
        user = name if isinstance(name, str) else f"edge:{edge}" if edge else UNNAMED
        token = getattr(principal, "token", None)
        method = "WEBSOCKET" if scope["type"] == "websocket" else str(scope.get("method", ""))
        route = getattr(scope.get("route"), "path", None) or str(scope.get("path", ""))
        client = scope.get("client")
        address = client[0] if client else ""
        target = state.get(DENIED_TARGET_KEY)
        base: dict[str, Any] = {"method": method, "route": route}
        detail: dict[str, Any] = {**base, "path": scope.get("path", ""), "status": 403}
        if principal is not None:
            detail["kind"] = getattr(principal, "kind", None)
            detail["role"] = getattr(principal, "role", None)
        if token:
            detail["token"] = token
        action = action_of(scope)
        if action is not None:
            detail["action"] = action
        detail["error"] = error
        try:
            await self.log.deny(
                (user, token or "", address, method, route),
                user=user,
                target=target if isinstance(target, str) else str(scope.get("path", "")),
                client=address,
                detail=detail,
                base=base,
            )
        except AuditError:
            logger.exception("a refused %s %s could not be audited", method, route)


def _error_of(body: bytes) -> dict[str, Any]:
    """The error of a 403's envelope (or the start of whatever else it was)."""
    try:
        parsed = json.loads(body[:_MAX_ERROR_BYTES])
    except (ValueError, UnicodeDecodeError):
        return {"message": body[:500].decode("utf-8", "replace")}
    error = parsed.get("error") if isinstance(parsed, dict) else None
    return error if isinstance(error, dict) else {"message": str(parsed)[:500]}
