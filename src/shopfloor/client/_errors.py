"""What the client raises: the server's error envelope, or no answer at all.

::

    ShopfloorError
    └── ClientError            the client could not get what it asked for
        ├── ApiError           the server answered with an error (status, code, field)
        └── ServerUnreachable  no answer: refused, timed out, TLS failed
"""

from __future__ import annotations

from shopfloor.errors import ShopfloorError

__all__ = ["ApiError", "ClientError", "ServerUnreachable"]


class ClientError(ShopfloorError):
    """The client could not get what it asked for."""


class ApiError(ClientError):
    """The server answered with its error envelope.

    Attributes:
        status: the HTTP status (404 unknown tag, 422 bad parameter, 503 shutting down …).
        code: the envelope's machine-readable kind, e.g. ``invalid_parameter``.
        field: the parameter at fault, if the server named one.
        message: the server's sentence.
    """

    def __init__(self, status: int, code: str, field: str | None, message: str) -> None:
        self.status = status
        self.code = code
        self.field = field
        self.message = message
        where = f" ({field})" if field else ""
        super().__init__(f"HTTP {status} {code}{where}: {message}")


class ServerUnreachable(ClientError):  # noqa: N818 - reads as what happened
    """No answer from the server: connection refused, timed out, or TLS failed."""
