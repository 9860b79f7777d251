"""Who acts: the one place every audited write takes its user from.

It is the authenticated principal of the request (a logged-in user, or ``token:NAME``
for an API token), as :mod:`shopfloor.server.api.auth` left it in the request's state.
A body may still carry a ``user`` field (the alarm actions, as older clients send
them): it must then be the principal's own name, else the request is refused (403), so
nobody acknowledges an alarm in another's name. The alarm journal and the audit log both
take the name from here, so they always agree.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from shopfloor.errors import ShopfloorError

__all__ = ["MAX_USER_LENGTH", "PRINCIPAL_KEY", "USER_HEADER", "ActorMismatch", "acting_user"]

USER_HEADER = "X-Shopfloor-User"
"""Formerly named the acting user; now ignored (kept for the clients that still send it)."""
PRINCIPAL_KEY = "principal"
"""The key of the authenticated principal in the request's state (``scope["state"]``)."""

MAX_USER_LENGTH = 200


class ActorMismatch(ShopfloorError):  # noqa: N818 - a refusal, named as one
    """A request claims to act as another user than the one it is authenticated as."""

    def __init__(self, principal: str, claimed: str) -> None:
        super().__init__(f"user: the request is authenticated as {principal!r}, not {claimed!r}")
        self.principal = principal
        self.claimed = claimed


def acting_user(conn: Any, claimed: object = None) -> str | None:
    """The user a write is done as: the authenticated principal's name (None when the
    request is not authenticated as a user or token, as an edge's is).

    Args:
        conn: the request (anything with a ``scope``) or the ASGI scope itself.
        claimed: the body's ``user`` field as sent, of any type (a malformed body's too).

    Raises:
        ActorMismatch: ``claimed`` is a name other than the principal's.
    """
    scope: Mapping[str, Any] = getattr(conn, "scope", conn)
    principal = (scope.get("state") or {}).get(PRINCIPAL_KEY)
    name = getattr(principal, "name", None)
    if not isinstance(name, str):
        return None
    if isinstance(claimed, str) and claimed.strip() and claimed.strip() != name:
        raise ActorMismatch(name, claimed.strip()[:MAX_USER_LENGTH])
    return name
