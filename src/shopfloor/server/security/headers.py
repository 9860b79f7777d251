"""Security headers on every answer: a strict Content-Security-Policy (only the server's own
scripts, styles, images and connections; no inline script, no framing), no MIME sniffing,
no referrer, no cross-origin window sharing.

The page is built for it: every script is a file under ``/static`` and styles change
through CSSOM (``element.style``), which a CSP does not block. The browser tests fail on
any CSP violation. The API reference at ``/docs`` is served locally (RapiDoc from npm)
under the same policy with one difference, :data:`DOCS_CSP`: RapiDoc's web components
write ``<style>`` elements and ``style`` attributes, so that page alone allows inline
*styles*; scripts, connections, fonts and images stay the server's own, as everywhere.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["CSP", "DOCS_CSP", "SecurityHeaders"]

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "font-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'none'; "
    "frame-ancestors 'none'; form-action 'self'"
)
DOCS_CSP = CSP.replace("style-src 'self';", "style-src 'self' 'unsafe-inline';")
_ALWAYS = (
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-opener-policy", b"same-origin"),
)


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
        root_path: str = scope.get("root_path", "")
        policy = DOCS_CSP if path in ("/docs", f"{root_path}/docs") else CSP
        extra = [*_ALWAYS, (b"content-security-policy", policy.encode())]

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                names = {name.lower() for name, _ in message.get("headers", [])}
                message["headers"] = [
                    *message.get("headers", []),
                    *((n, v) for n, v in extra if n not in names),
                ]
            await send(message)

        await self.app(scope, receive, with_headers)
