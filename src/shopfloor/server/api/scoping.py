"""Site/area scoping in the routes: who is asking, and refusing what lies outside.

A route takes the caller with ``principal: Caller`` (the principal :class:`.auth.Require`
already authenticated, cached for the request) and then narrows its lists with
:mod:`shopfloor.server.security.scoping` or refuses a named object with :func:`require_path`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Annotated, TypeVar

from fastapi import Depends
from starlette.requests import HTTPConnection

from shopfloor.server.api.auth import principal_of
from shopfloor.server.api.errors import ApiError
from shopfloor.server.security.scoping import allowed, is_scoped
from shopfloor.server.security.service import Principal

__all__ = ["Caller", "caller", "require_path", "scope_machines"]

T = TypeVar("T")


async def caller(conn: HTTPConnection) -> Principal | None:
    """The request's principal (None: an edge's own credential, which is not scoped)."""
    try:
        return await principal_of(conn)
    except ApiError:  # pragma: no cover - the route's Require refused it already
        return None


Caller = Annotated[Principal | None, Depends(caller)]


def require_path(
    principal: Principal | None, path: str, *, field: str, what: str | None = None
) -> None:
    """Refuse (403, naming ``field`` and the object) an object outside the principal's sites.

    Args:
        what: how the message names the object (default: ``the tag 'PATH'``).

    Raises:
        ApiError: 403 when ``path`` lies outside every site of the principal.
    """
    if not allowed(principal, path):
        assert principal is not None
        raise ApiError(
            403,
            "forbidden",
            field,
            f"{what or f'the tag {path!r}'} is outside the sites {principal.name} may see "
            f"({', '.join(principal.sites)})",
            target=path,
        )


def scope_machines(
    principal: Principal | None,
    machines: Sequence[T],
    path: Callable[[T], str],
    *,
    named: str | None,
    field: str = "equipment",
    allow_empty: bool = False,
    line: str | None = None,
) -> list[T]:
    """The machines of an analytics query that the principal may see.

    A machine named by the query (``named``) outside the sites is refused; a plant-wide
    or line query is narrowed to the machines within them (none at all: refused too,
    unless ``allow_empty``: a listing may well be empty; a ``line`` asked for is then
    named, with the field ``line``).

    Raises:
        ApiError: 403, naming ``field``.
    """
    if not is_scoped(principal):
        return list(machines)
    assert principal is not None
    if named is not None:
        for machine in machines:
            require_path(principal, path(machine), field=field, what=f"the equipment {named!r}")
    kept = [m for m in machines if allowed(principal, path(m))]
    if not kept and not allow_empty and line is not None and named is None:
        raise ApiError(
            403,
            "forbidden",
            "line",
            f"the line {line!r} is outside the sites {principal.name} may see "
            f"({', '.join(principal.sites)})",
        )
    if not kept and not allow_empty:
        raise ApiError(
            403,
            "forbidden",
            field,
            f"none of the equipment asked for is within the sites {principal.name} may see "
            f"({', '.join(principal.sites)})",
        )
    return kept
