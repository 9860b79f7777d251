"""What uses the disk: ``/api/v1/storage`` (the CLI's ``shopfloor disk`` shows the same)."""

from __future__ import annotations

from dataclasses import replace
from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Query

from shopfloor.server.api.auth import READ
from shopfloor.server.api.context import Ctx
from shopfloor.server.api.convert import normalise_prefix
from shopfloor.server.api.errors import ApiError
from shopfloor.server.api.routes.tags import PrefixQuery
from shopfloor.server.api.schemas import ErrorEnvelope, StorageOut
from shopfloor.server.api.scoping import Caller
from shopfloor.server.api.timeparse import iso_strings
from shopfloor.server.historian.disk_usage import (
    Group,
    StorageReport,
    StorageReporter,
    TagUsage,
    group_usage,
)
from shopfloor.server.security.scoping import filter_items, is_scoped

__all__ = ["render", "router"]

router = APIRouter(prefix="/api/v1", tags=["storage"], dependencies=[READ])


def _iso(ns: int | None) -> str | None:
    if ns is None:
        return None
    return iso_strings(np.array([ns], dtype=np.int64))[0]


def render(
    report: StorageReport, *, group: Group, prefix: str | None, top: int | None
) -> dict[str, Any]:
    """The report as the API answers it (also the CLI's ``--json``)."""
    groups = group_usage(report.tags, group, prefix=prefix)
    shown = groups if top is None else groups[:top]
    totals = report.totals
    retention = dict(report.retention)
    last = retention.pop("last_pass_ns", None)
    retention["last_pass"] = _iso(last)
    return {
        "backend": report.backend,
        "method": report.method,
        "group": group,
        "prefix": prefix,
        "measured": _iso(report.measured_ns),
        "groups": [
            {
                "key": g.key,
                "tags": g.tags,
                "points": g.points,
                "bytes": g.bytes,
                "rollup_rows": g.rollup_rows,
                "rollup_bytes": g.rollup_bytes,
                "oldest": _iso(g.oldest_ns),
                "newest": _iso(g.newest_ns),
            }
            for g in shown
        ],
        "groups_total": len(groups),
        "tables": [
            {
                "name": t.name,
                "kind": t.kind,
                "rows": t.rows,
                "points": t.points,
                "bytes": t.bytes,
                "used_bytes": t.used_bytes,
            }
            for t in report.tables
        ],
        "totals": {
            "storage_bytes": totals.storage_bytes,
            "used_bytes": totals.used_bytes,
            "database_bytes": totals.database_bytes,
            "free_disk_bytes": totals.free_disk_bytes,
            "wal_bytes": totals.wal_bytes,
            "budget_bytes": retention.get("disk_budget_bytes"),
            "points": totals.points,
            "rollup_rows": totals.rollup_rows,
        },
        "retention": retention,
    }


@router.get(
    "/storage",
    summary="What uses the disk",
    description="Bytes, points, oldest and newest point per area, equipment or tag, "
    "largest first, with the tables, the totals (file or database size, what the disk "
    "budget counts, free disk) and the retention counters. Measured on each call: one scan "
    "of the raw points' tag and time columns (on PostgreSQL, of every block's timestamps). "
    "A user limited to sites sees the groups of its own tags (the totals stay the server's).",
    response_model=StorageOut,
    responses={
        422: {"model": ErrorEnvelope, "description": "A malformed parameter."},
        501: {"model": ErrorEnvelope, "description": "The historian cannot measure itself."},
    },
)
async def storage(
    ctx: Ctx,
    principal: Caller,
    group: Annotated[
        Group, Query(description="Sum per `area`, `equipment` or `tag`.")
    ] = "equipment",
    prefix: PrefixQuery = None,
    top: Annotated[
        int | None, Query(ge=1, le=100_000, description="Only the largest groups.")
    ] = None,
) -> dict[str, Any]:
    """Measure the history and sum it per group."""
    wanted = normalise_prefix(prefix)
    historian = ctx.historian
    if not isinstance(historian, StorageReporter):
        raise ApiError(501, "not_implemented", None, "this historian cannot report its storage")
    report = await historian.storage_report()
    if is_scoped(principal):  # the groups name tags: only those within the user's sites
        report = replace(report, tags=tuple(filter_items(principal, report.tags, _path)))
    return render(report, group=group, prefix=wanted, top=top)


def _path(usage: TagUsage) -> str:
    return usage.path
