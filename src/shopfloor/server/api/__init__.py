"""The server's REST and websocket API (FastAPI)."""

from shopfloor.server.api.app import create_app
from shopfloor.server.api.context import ApiContext
from shopfloor.server.api.errors import ApiError
from shopfloor.server.api.ws import LiveHub

__all__ = ["ApiContext", "ApiError", "LiveHub", "create_app"]
