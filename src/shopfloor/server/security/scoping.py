"""Site/area scoping: which asset paths a principal may see.

A user may be limited to ISA-95 path prefixes (``sites``, e.g. ``acme/plant-1/machining``);
an empty tuple means the whole plant. One rule decides for every object that has an asset
path (a tag, an alarm's source, a piece of equipment): :func:`allowed`. The API refuses a
named object outside the user's sites (403) and silently narrows lists and prefix queries,
so a scoped user never learns more than the paths he may read.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Protocol, TypeVar

import pyarrow as pa
import pyarrow.compute as pc

__all__ = ["Scoped", "allowed", "filter_items", "filter_table", "is_scoped"]

T = TypeVar("T")


class Scoped(Protocol):
    """What scoping needs of a principal: its site prefixes (empty: everything)."""

    @property
    def sites(self) -> tuple[str, ...]: ...


def _under(path: str, prefix: str) -> bool:
    prefix = prefix.rstrip("/")
    return not prefix or path == prefix or path.startswith(prefix + "/")


def is_scoped(principal: Scoped | None) -> bool:
    """Whether ``principal`` is limited at all (None, e.g. an edge's credential: no)."""
    return principal is not None and bool(principal.sites)


def allowed(principal: Scoped | None, path: str) -> bool:
    """Whether ``principal`` may see the object at asset path ``path``.

    Whole segments only: the site ``acme/plant-1`` covers ``acme/plant-1/press/temp`` but
    not ``acme/plant-10/...``. No principal (an edge's own credential) or no sites: True.
    """
    if not is_scoped(principal):
        return True
    assert principal is not None
    return any(_under(path, site) for site in principal.sites)


def filter_items(principal: Scoped | None, items: Iterable[T], path: Callable[[T], str]) -> list[T]:
    """The ``items`` whose ``path(item)`` the principal may see, in their order."""
    return [item for item in items if allowed(principal, path(item))]


def filter_table(principal: Scoped | None, table: pa.Table, column: str = "path") -> pa.Table:
    """The rows of ``table`` whose ``column`` holds a path the principal may see."""
    if not is_scoped(principal) or not table.num_rows:
        return table
    assert principal is not None
    paths = table.column(column)
    keep = None
    for given in principal.sites:
        site = given.rstrip("/")
        if not site:
            return table
        one = pc.or_(pc.equal(paths, site), pc.starts_with(paths, site + "/"))
        keep = one if keep is None else pc.or_(keep, one)
    assert keep is not None
    return table.filter(pc.fill_null(keep, False))
