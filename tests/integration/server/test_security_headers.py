"""Security headers on every answer of a real server: a strict CSP, no framing, no MIME
sniffing, no referrer; the locally served API reference under the same policy but for
inline styles."""

from __future__ import annotations

from shopfloor.server.security.headers import CSP, DOCS_CSP
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
    assert docs.headers["content-security-policy"] == DOCS_CSP
    assert "cdn" not in docs.text.lower()
    # the one difference: RapiDoc's components write inline styles; scripts stay strict
    assert DOCS_CSP.replace(" 'unsafe-inline'", "") == CSP
    assert "script-src 'self';" in DOCS_CSP
    assert docs.headers["x-frame-options"] == "DENY"
    assert (await client.get("/redoc")).headers["location"] == "/docs"
