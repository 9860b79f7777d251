"""The browser dashboard: one HTML page plus ES modules, served by the server itself.

Include :data:`router` in the FastAPI app (``create_app(..., extra_routers=[router])``); it
serves ``GET /`` and ``GET /static/...``. Third-party browser libraries are copied into
``static/vendor/`` by ``make web-assets`` and never fetched from a CDN.
"""

from shopfloor.server.web.routes import STATIC_DIR, TEMPLATES_DIR, router, static_url

__all__ = ["STATIC_DIR", "TEMPLATES_DIR", "router", "static_url"]
