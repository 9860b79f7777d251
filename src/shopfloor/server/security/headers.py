"""Security headers on every answer: a strict Content-Security-Policy (only the server's own
scripts, styles, images and connections; no inline script, no framing), no MIME sniffing,
no referrer, no cross-origin window sharing.

The page is built for it: every script is a file under ``/static`` and styles change
through CSSOM (``element.style``), which a CSP does not block. The browser tests fail on
any CSP violation. FastAPI's ``/docs`` and ``/redoc`` pages still load their viewers
from a CDN, which this policy would block: they are left without it until they are served
locally (issue 8).
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["CSP", "SecurityHeaders"]

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "font-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'none'; "
    "frame-ancestors 'none'; form-action 'self'"
)
_ALWAYS = (
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-opener-policy", b"same-origin"),
)
_WITHOUT_CSP = ("/docs", "/redoc")


class SecurityHeaders:
    """Add the headers to every HTTP answer of ``app`` (pure ASGI, so streaming answers
    and websockets pass untouched)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope.get("path", "")
        extra = list(_ALWAYS)
        if not path.startswith(_WITHOUT_CSP):
            extra.append((b"content-security-policy", CSP.encode()))

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                names = {name.lower() for name, _ in message.get("headers", [])}
                message["headers"] = [
                    *message.get("headers", []),
                    *((n, v) for n, v in extra if n not in names),
                ]
            await send(message)

        await self.app(scope, receive, with_headers)
