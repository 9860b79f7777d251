"""A size limit on every request body, so no route can be made to buffer without end.

Routes edges write to (``/api/v1/ingest``, ``PUT /api/v1/tags``, ``/api/v1/edges/…``)
take up to the ingest limit (``[ingest] max_body_bytes``); every other body — operator
actions, asset edits, users, writes — is small JSON and gets ``max_request_bytes``.

A request that declares a larger ``Content-Length`` is refused with ``413`` before a
byte of its body is read; one that streams more than it declared (or declares nothing,
as chunked uploads do) is cut off at the limit, and the route's read of the body fails
with the same ``413``. The answer carries the API's error envelope naming the limit.
"""

from __future__ import annotations

import json

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["DEFAULT_MAX_REQUEST_BYTES", "EDGE_PATHS", "BodyLimit", "BodyTooLarge"]

DEFAULT_MAX_REQUEST_BYTES = 1 << 20
"""The largest body of a request that is not an edge's (1 MiB)."""

EDGE_PATHS = ("/api/v1/ingest", "/api/v1/tags", "/api/v1/edges/")
"""Path prefixes of the routes edges write to: they take the ingest limit."""


class BodyTooLarge(HTTPException):
    """Raised from the body's read when it grows past the limit: an HTTPException, so
    FastAPI's body parsing passes it on instead of calling the body malformed (400)."""

    field = "body"

    def __init__(self, limit: int) -> None:
        super().__init__(413, _message(limit))


class BodyLimit:
    """Refuse request bodies over their route's limit with ``413`` (pure ASGI)."""

    def __init__(self, app: ASGIApp, *, max_request_bytes: int, max_edge_bytes: int) -> None:
        self.app = app
        self.max_request_bytes = max_request_bytes
        self.max_edge_bytes = max_edge_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope.get("path", "")
        root = str(scope.get("root_path", "")).rstrip("/")
        if root and path.startswith(root):
            path = path[len(root) :]
        limit = self.max_edge_bytes if path.startswith(EDGE_PATHS) else self.max_request_bytes
        declared = _content_length(scope)
        if declared is not None and declared > limit:
            await _refuse(send, limit)
            return
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise BodyTooLarge(limit)
            return message

        await self.app(scope, counted, send)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", []):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def _message(limit: int) -> str:
    return f"the request body is larger than this route takes ({limit} bytes)"


async def _refuse(send: Send, limit: int) -> None:
    body = json.dumps(
        {"error": {"code": "payload_too_large", "field": "body", "message": _message(limit)}}
    ).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
