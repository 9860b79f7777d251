"""Security headers on every answer of a real server: a strict CSP, no framing, no MIME
sniffing, no referrer; FastAPI's CDN-fed /docs page is the one left without the CSP."""

from __future__ import annotations

from shopfloor.server.security.headers import CSP
from shopfloor.server.web import router as web_router

from .conftest import MakePlatform


async def test_every_answer_carries_the_security_headers(make_platform: MakePlatform) -> None:
    platform = await make_platform(extra_routers=[web_router])
    client = platform.client
    for path, status in (
        ("/", 200),
        ("/overview", 200),
        ("/machines/no-such-machine", 404),  # the HTML 404 page too
        ("/healthz", 200),
        ("/api/v1/tags", 200),
        ("/api/v1/tags/no/such/tag/series", 404),  # an error envelope too
        ("/static/js/main.js", 200),
    ):
        answer = await client.get(path)
        assert answer.status_code == status, (path, answer.text[:200])
        headers = answer.headers
        assert headers["content-security-policy"] == CSP, path
        assert "script-src 'self';" in CSP
        assert "frame-ancestors 'none'" in CSP
        assert headers["x-frame-options"] == "DENY", path
        assert headers["x-content-type-options"] == "nosniff", path
        assert headers["referrer-policy"] == "no-referrer", path
    docs = await client.get("/docs")
    assert docs.status_code == 200
    assert "content-security-policy" not in docs.headers  # its viewer comes from a CDN
    assert docs.headers["x-frame-options"] == "DENY"
