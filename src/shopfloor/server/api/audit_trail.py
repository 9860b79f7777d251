"""Every audited write is entered in the audit log, accepted or not.

A route is audited when it is declared with ``openapi_extra=audited("alarm.acknowledge")``
(the action name also shows in the OpenAPI document). :class:`AuditMiddleware` wraps
every write request (``POST``, ``PUT``, ``PATCH``, ``DELETE``) and, once routing has
named the route, holds an audited route's answer until its entry is written, so the
entry is written however the request ends: done (``ok``); refused by the route, by
body validation before the route ran, or as malformed JSON (``rejected``, with the error
envelope and what was sent); or failed by a bug (``error``).
It is written before the answer leaves: a client that was told "done" can rely on the
entry being on disk. A refusal with 403 is entered once, as ``access.denied`` naming the
action, by :mod:`.denial_audit`. A refusal with 401 (no or a bad credential, user
``(unnamed)``: anyone on the network can send those) is coalesced per client address,
method and route (:mod:`shopfloor.server.security.denials`): the first is entered at
once, its repeats within the window are counted into one summary entry
(``detail.repeats``), so a flood grows the log by a couple of rows per window and still
every attempt is counted.

The route adds what only it knows with :func:`note`: the target's canonical name (an
equipment's ISA-95 path, an alarm's name) and the detail (an edit's before and after).
Without a note (the route never ran) the target is taken from the request: the ``alarm``,
``id`` or ``path`` field of the body, or the path's id.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shopfloor.server.api.errors import error_response, unavailable_response
from shopfloor.server.api.unavailable import unavailable_store
from shopfloor.server.security import AuditError, AuditLog, Outcome, acting_user

__all__ = ["AUDIT_KEY", "UNNAMED", "AuditMiddleware", "action_of", "audited", "note"]

logger = logging.getLogger(__name__)

AUDIT_KEY = "x-audit-action"
_WRITES = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_KEEP_BODY = 64 * 1024
"""The most of a request body kept for the entry of a rejected write."""
_STATE_KEY = "audit_note"
UNNAMED = "(unnamed)"


def audited(action: str) -> dict[str, Any]:
    """``openapi_extra`` of a route whose every call is audited as ``action``."""
    return {AUDIT_KEY: action}


@dataclass(slots=True)
class _Note:
    target: str
    detail: dict[str, Any] = field(default_factory=dict)


def note(request: Request, *, target: str, detail: dict[str, Any] | None = None) -> None:
    """Tell the audit what a route acts on and how (called by audited routes)."""
    setattr(request.state, _STATE_KEY, _Note(target, dict(detail or {})))


class AuditMiddleware:
    """Audit each call of an audited route in ``log`` (pure ASGI, outermost middleware)."""

    def __init__(self, app: ASGIApp, log: AuditLog) -> None:
        self.app = app
        self.log = log

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") not in _WRITES:
            await self.app(scope, receive, send)
            return
        sent = bytearray()  # kept for the entry of a rejected write

        async def receive_copy() -> Message:
            message = await receive()
            if message["type"] == "http.request" and len(sent) < _KEEP_BODY:
                sent.extend(message.get("body", b"")[: _KEEP_BODY - len(sent)])
            return message

        # The route is known once routing is done, so at the answer's first message: an
        # audited route's answer (a small envelope) is held until its entry is on disk.
        action: str | None = None
        held: list[Message] = []

        async def hold(message: Message) -> None:
            nonlocal action
            if message["type"] == "http.response.start":
                action = action_of(scope)
            if action is None:
                await send(message)
            else:
                held.append(message)

        try:
            await self.app(scope, receive_copy, hold)
        except Exception as exc:
            action = action or action_of(scope)
            if action is not None:
                status = 500 if unavailable_store(exc) is None else 503
                await self._record(scope, action, bytes(sent), status, b"")
            raise
        if action is None:
            return
        start = next((m for m in held if m["type"] == "http.response.start"), None)
        status = 500 if start is None else int(start["status"])
        if status == 403:  # entered as access.denied by DenialAudit, with the action
            for message in held:
                await send(message)
            return
        answer = b"".join(m.get("body", b"") for m in held if m["type"] == "http.response.body")
        try:
            await self._record(scope, action, bytes(sent), status, answer)
        except AuditError as err:
            logger.exception("%s was answered %d but could not be audited", action, status)
            if status >= 400:  # refused, nothing done: the audit log's outage, try again
                await unavailable_response("the audit log", err)(scope, receive, send)
                return
            response = error_response(  # done, and not audited: the server failed
                500,
                "internal_error",
                None,
                "done, but the audit log cannot be written: see the server log",
            )
            await response(scope, receive, send)
            return
        for message in held:
            await send(message)

    async def _record(
        self, scope: Scope, action: str, sent: bytes, status: int, answer: bytes
    ) -> None:
        body = _redacted(_json(sent))
        fields = body if isinstance(body, dict) else {}
        outcome = (
            Outcome.OK if status < 400 else Outcome.REJECTED if status < 500 else Outcome.ERROR
        )
        state = scope.get("state") or {}
        found = state.get(_STATE_KEY)
        if isinstance(found, _Note):
            target, detail = found.target, dict(found.detail)
        else:
            params = scope.get("path_params") or {}
            named = (
                fields.get("alarm")
                or fields.get("id")
                or fields.get("path")
                or next(iter(params.values()), "")
            )
            target = named if isinstance(named, str) else ""
            detail = {} if outcome is Outcome.OK or body is None else {"request": body}
        detail["status"] = status
        if outcome is not Outcome.OK:
            error = _json(answer)
            if isinstance(error, dict) and "error" in error:
                detail["error"] = error["error"]
        client = scope.get("client")
        address = client[0] if client else ""
        user = acting_user(scope)
        if user is None and status == 401:  # anyone can send these: coalesced
            method = str(scope.get("method", ""))
            route = getattr(scope.get("route"), "path", None) or str(scope.get("path", ""))
            await self.log.refused(
                (address, method, route),
                action=action,
                user=UNNAMED,
                target=target,
                client=address,
                detail=detail,
                base={"method": method, "route": route, "status": status},
            )
            return
        await self.log.record(
            user=user or UNNAMED,
            action=action,
            target=target,
            outcome=outcome,
            client=address,
            detail=detail,
        )


def action_of(scope: Scope) -> str | None:
    """The audit action of the route that answered (None: not audited, or no route)."""
    route = scope.get("route")
    extra = getattr(route, "openapi_extra", None) or {}
    action = extra.get(AUDIT_KEY)
    return action if isinstance(action, str) else None


_SECRET_KEYS = frozenset({"password", "current", "new", "secret", "token"})


def _redacted(body: Any) -> Any:
    """The body without passwords and secrets: the audit log is read by admins, and a
    refused password change must not leave the password on disk."""
    if not isinstance(body, dict):
        return body
    return {k: "***" if k in _SECRET_KEYS else v for k, v in body.items()}


def _json(raw: bytes) -> Any:
    if not raw:
        return None
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return raw[:2000].decode("utf-8", "replace")
