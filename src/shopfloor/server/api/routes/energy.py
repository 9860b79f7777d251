"""Energy: ``GET /api/v1/energy``.

Equipment is named by id (``cnc-01``) or path; a line by its name (``line-1``) or path.
Without either, the plant: every piece of equipment with energy and a state tag
(machines, conveyors, compressors); incoming meters are asked for by name or line, as
they measure the others' energy (see :mod:`~shopfloor.server.analytics.energy_service`).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from shopfloor.errors import PayloadError
from shopfloor.server.analytics.energy_service import EnergyService
from shopfloor.server.api.auth import READ
from shopfloor.server.api.context import ApiContext, Ctx
from shopfloor.server.api.errors import ApiError
from shopfloor.server.api.routes.analytics import End, Group, Line, Start, _range
from shopfloor.server.api.schemas import ErrorEnvelope
from shopfloor.server.api.scoping import Caller, scope_machines
from shopfloor.server.api.timeparse import format_ns

__all__ = ["router"]

router = APIRouter(prefix="/api/v1", tags=["analytics"], dependencies=[READ])

_ERRORS: dict[int | str, dict[str, object]] = {
    404: {"model": ErrorEnvelope},
    422: {"model": ErrorEnvelope},
}
_MAX_HOUR_ROWS = 24 * 93

Equipment = Annotated[
    str | None,
    Query(description="A machine's or meter's id (`cnc-01`, `mtr-main`) or path; not with `line`."),
]


def _energy(ctx: ApiContext) -> EnergyService:
    if ctx.energy is None:
        raise ApiError(
            404, "not_found", None, "this server has no equipment with energy or power tags"
        )
    return ctx.energy


@router.get("/energy", responses=_ERRORS, summary="Energy of a machine, a line or the plant")
async def get_energy(
    ctx: Ctx,
    principal: Caller,
    *,
    equipment: Equipment = None,
    line: Line = None,
    start: Start = "-24h",
    end: End = "now",
    group: Group = "none",
) -> dict[str, Any]:
    """kWh in total, while producing, idle (not running in planned time), in planned
    stops (not running outside planned time) and with the state unknown; good parts and
    kWh per good part; the time covered by data.

    Energy is summed over the equipment and the group; closed hours come from the store,
    the rest is computed now. ``sources`` tells per equipment whether its energy came from
    its meter reading (``counter``) or from integrating its power (``power``).
    """
    service = _energy(ctx)
    a, b = _range(ctx, start, end)
    if group == "hour" and b - a > _MAX_HOUR_ROWS * 3_600 * 10**9:
        raise PayloadError("group", "group: hour rows for at most 93 days; use day or shift")
    meters = service.select(equipment=equipment or None, line=line or None)
    meters = scope_machines(
        principal, meters, lambda m: m.path, named=equipment or None, line=line or None
    )
    rows = []
    for key, lo, hi, summary in await service.energy(meters, a, b, group):
        row: dict[str, Any] = {"start": format_ns(lo), "end": format_ns(hi)}
        if group == "hour":
            row["hour"] = format_ns(int(str(key[0])))
        elif group == "shift":
            row["shift"] = key[0] or None
            row["shift_start"] = format_ns(int(str(key[1]))) if key[0] else None
        elif group == "day":
            row["day"] = key[0]
        rows.append(row | summary)
    return {
        "equipment": [m.id for m in meters],
        "sources": {m.id: m.source for m in meters},
        "start": format_ns(a),
        "end": format_ns(b),
        "group": group,
        "rows": rows,
    }
