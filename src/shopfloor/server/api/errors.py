"""One error envelope for every failure, whoever raised it.

``{"error": {"code": ..., "field": ..., "message": ...}}`` is the answer to a bad query
parameter, a malformed ingest payload, an unknown tag or route, and an unexpected bug alike,
so clients need one code path to show what went wrong.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shopfloor.errors import IngestBusy, PayloadError, ShutdownError, UnknownTagError
from shopfloor.server.api.unavailable import OUTAGES, RETRY_AFTER_S, unavailable_store
from shopfloor.server.security import ActorMismatch, PasswordRejected, SecurityError
from shopfloor.wire import PayloadTooLarge, UnsupportedEncoding, UnsupportedMediaType

logger = logging.getLogger(__name__)

__all__ = [
    "DENIED_TARGET_KEY",
    "ApiError",
    "CatchAllMiddleware",
    "error_response",
    "install_error_handlers",
    "unavailable_response",
]

_CODE_BY_STATUS = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "invalid_parameter",
    429: "too_many_requests",
    500: "internal_error",
    503: "unavailable",
}


class ApiError(Exception):
    """An answer other than success, raised from a route.

    Args:
        status: the HTTP status.
        code: the machine-readable kind (see :class:`~.schemas.ErrorBody`).
        field: the parameter or payload field at fault, if any.
        message: a sentence for people.
        headers: extra response headers (``Retry-After``).
        target: the object a refusal is about (a tag's ISA-95 path): the audit of a 403
            names it (:mod:`.denial_audit`).
    """

    def __init__(
        self,
        status: int,
        code: str,
        field: str | None,
        message: str,
        *,
        headers: Mapping[str, str] | None = None,
        target: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.field = field
        self.message = message
        self.headers = dict(headers or {})
        self.target = target


def error_response(
    status: int,
    code: str,
    field: str | None,
    message: str,
    *,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    """Return the envelope as a response."""
    body = {"error": {"code": code, "field": field, "message": message}}
    return JSONResponse(body, status_code=status, headers=dict(headers or {}))


def unavailable_response(what: str, exc: BaseException) -> JSONResponse:
    """503 with ``Retry-After``, naming the store that is unavailable (the cause is logged,
    not sent: it may name hosts and files)."""
    logger.warning("answering 503: %s is unavailable: %s", what, exc)
    return error_response(
        503,
        "unavailable",
        None,
        f"{what} is unavailable: try again in {RETRY_AFTER_S} s",
        headers={"Retry-After": str(RETRY_AFTER_S)},
    )


DENIED_TARGET_KEY = "denied_target"
"""Where the object of a refused request is left in the request's state for its audit."""


async def _envelope(request: Request, exc: Exception) -> Response:
    """Translate each kind of exception the API knows into the envelope."""
    if isinstance(exc, ApiError):
        if exc.target is not None:
            request.scope.setdefault("state", {})[DENIED_TARGET_KEY] = exc.target
        return error_response(exc.status, exc.code, exc.field, exc.message, headers=exc.headers)
    if isinstance(exc, IngestBusy):
        return error_response(
            429,
            "too_many_requests",
            None,
            exc.reason,
            headers={"Retry-After": str(exc.retry_after_s)},
        )
    if isinstance(exc, PayloadTooLarge):
        return error_response(413, "payload_too_large", exc.field, exc.message)
    if isinstance(exc, UnsupportedMediaType | UnsupportedEncoding):
        return error_response(415, "unsupported_media_type", exc.field, exc.message)
    if isinstance(exc, PayloadError):
        return error_response(422, "invalid_parameter", exc.field, exc.message)
    if isinstance(exc, UnknownTagError):
        return error_response(404, "not_found", "path", f"no tag has the path {exc.path!r}")
    if isinstance(exc, ShutdownError):
        return error_response(
            503, "unavailable", None, "the server is shutting down", headers={"Retry-After": "5"}
        )
    what = unavailable_store(exc)
    if what is not None:
        return unavailable_response(what, exc)
    if isinstance(exc, ActorMismatch):
        return error_response(403, "forbidden", "user", str(exc))
    if isinstance(exc, PasswordRejected):
        return error_response(422, "invalid_parameter", "password", str(exc))
    if isinstance(exc, SecurityError):
        code = _CODE_BY_STATUS.get(exc.status, "error")
        if exc.status == 409:
            code = "conflict"
        return error_response(exc.status, code, exc.field, exc.message)
    if isinstance(exc, RequestValidationError):
        return _validation_error(exc)
    if isinstance(exc, HTTPException):
        code = _CODE_BY_STATUS.get(exc.status_code, "error")
        detail = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        field = getattr(exc, "field", None)  # set by the body limit's BodyTooLarge
        return error_response(exc.status_code, code, field, detail, headers=exc.headers)
    raise exc  # pragma: no cover - only registered for the classes above


def _validation_error(exc: RequestValidationError) -> Response:
    errors: list[dict[str, Any]] = list(exc.errors())
    if not errors:
        return error_response(422, "invalid_parameter", None, "the request is invalid")
    first = errors[0]
    loc = [str(part) for part in first.get("loc", ())]
    # loc is ("query", "limit") or ("body", "points", 3, "ts"): drop where it came from.
    field = ".".join(loc[1:]) if len(loc) > 1 else (loc[0] if loc else None)
    message = f"{field}: {first.get('msg', 'is invalid')}" if field else str(first.get("msg"))
    if len(errors) > 1:
        message += f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})"
    return error_response(422, "invalid_parameter", field, message)


def install_error_handlers(app: FastAPI) -> None:
    """Route every exception the API can raise to the envelope."""
    kinds: tuple[type[Exception], ...] = (
        ApiError,
        IngestBusy,
        PayloadError,
        UnknownTagError,
        ShutdownError,
        ActorMismatch,
        PasswordRejected,
        *OUTAGES,
    )
    for kind in (*kinds, RequestValidationError, HTTPException):
        app.add_exception_handler(kind, _envelope)
    app.add_middleware(CatchAllMiddleware)


class CatchAllMiddleware:
    """Turn an unexpected exception into a logged traceback and a 500 envelope (a store's
    outage raised outside the routes into the 503 the routes' would be).

    Starlette's own last-resort handler re-raises after answering, which makes the server
    log the error twice and test clients raise; this one answers and stops there.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def send_tracking(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, send_tracking)
        except Exception as exc:
            what = unavailable_store(exc)  # raised outside the routes (a middleware's)
            if what is not None and not started:
                await unavailable_response(what, exc)(scope, receive, send)
                return
            logger.exception(
                "unexpected error answering %s %s", scope.get("method"), scope.get("path")
            )
            if started:  # too late for an envelope: let the server drop the connection
                raise
            response = error_response(
                500,
                "internal_error",
                None,
                "an unexpected error happened; the traceback is in the server log",
            )
            await response(scope, receive, send)
