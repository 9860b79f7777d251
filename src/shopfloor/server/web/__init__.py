"""The browser dashboard: server-rendered pages plus ES modules, served by the server itself.

Include :data:`router` in the FastAPI app (``create_app(..., extra_routers=[router])``); it
serves ``GET /`` (live plant), ``GET /oee``, ``GET /trends`` and ``GET /static/...``.
Third-party browser libraries are copied into ``static/vendor/`` by ``make web-assets`` and
never fetched from a CDN.
"""

from shopfloor.server.web import analysis_pages
from shopfloor.server.web.routes import STATIC_DIR, TEMPLATES_DIR, router, static_url

router.include_router(analysis_pages.router)

__all__ = ["STATIC_DIR", "TEMPLATES_DIR", "router", "static_url"]
