"""Who acts: the one place every audited write takes its user from.

Until users, roles and tokens exist (issue 8), a request names its user itself, and this
is taken on trust, as a shift log is: the ``user`` field of the body (the alarm actions,
as the web page sends them) or else the ``X-Shopfloor-User`` header (asset edits, whose
bodies are equipment, and ``DELETE``, which has none). The alarm journal and the audit log
both take the name from here, so they always agree.

Issue 8 replaces the body of :func:`acting_user` with the authenticated principal of the
request (and refuses a claimed name that differs); no route and no audit code changes.
"""

from __future__ import annotations

from collections.abc import Mapping

__all__ = ["MAX_USER_LENGTH", "USER_HEADER", "acting_user"]

USER_HEADER = "X-Shopfloor-User"
"""The request header that names the acting user of a write without a ``user`` field."""

MAX_USER_LENGTH = 200


def acting_user(headers: Mapping[str, str], claimed: object = None) -> str | None:
    """The user a write is done as: ``claimed`` (the body's ``user``) if it is a name,
    else the ``X-Shopfloor-User`` header; None when the request names nobody.

    Args:
        headers: the request's headers (case-insensitive, as Starlette's are).
        claimed: the body's ``user`` field as sent, of any type (a malformed body's too).
    """
    if isinstance(claimed, str) and claimed.strip():
        return claimed.strip()[:MAX_USER_LENGTH]
    header = headers.get(USER_HEADER, "").strip()
    return header[:MAX_USER_LENGTH] or None
