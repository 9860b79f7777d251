"""The browser dashboard: server-rendered pages plus ES modules, served by the server itself.

Include :data:`router` in the FastAPI app (``create_app(..., extra_routers=[router])``); it
serves the live page ``GET /``, the plant overview ``GET /overview``, the machine pages
``GET /machines/{id}``, ``GET /oee``, ``GET /trends`` and ``GET /static/...``. Third-party
browser libraries are copied into ``static/vendor/`` by ``make web-assets`` and never
fetched from a CDN.
"""

from shopfloor.server.web import analysis_pages
from shopfloor.server.web.pages import router as _pages_router
from shopfloor.server.web.routes import STATIC_DIR, TEMPLATES_DIR, router, static_url

# The pages' own routers hang off the one web router, so the app needs nothing else.
router.include_router(_pages_router)
router.include_router(analysis_pages.router)

__all__ = ["STATIC_DIR", "TEMPLATES_DIR", "router", "static_url"]
