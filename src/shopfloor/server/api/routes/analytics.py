"""OEE and downtime: ``GET /api/v1/oee``, ``GET /api/v1/downtime``,
``GET /api/v1/downtime/pareto`` and ``PUT /api/v1/downtime/{equipment}/{start}``.

Machines are named by id (``cnc-01``) or path; a line by its name (``line-1``) or path.
The operator assigning a reason is the logged-in user (a body ``user`` must be that name).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from shopfloor.errors import PayloadError
from shopfloor.server.analytics.machines import Machine
from shopfloor.server.analytics.service import Analytics, StopEvent
from shopfloor.server.api.audit_trail import UNNAMED, audited, note
from shopfloor.server.api.auth import OPERATE, READ
from shopfloor.server.api.context import ApiContext, Ctx
from shopfloor.server.api.errors import ApiError
from shopfloor.server.api.schemas import ErrorEnvelope
from shopfloor.server.api.scoping import Caller, scope_machines
from shopfloor.server.api.timeparse import format_ns, parse_time
from shopfloor.server.security import acting_user

__all__ = ["router"]

router = APIRouter(prefix="/api/v1", tags=["analytics"], dependencies=[READ])

_ERRORS: dict[int | str, dict[str, object]] = {
    404: {"model": ErrorEnvelope},
    422: {"model": ErrorEnvelope},
}
_MAX_RANGE_NS = 400 * 86_400 * 10**9
_MAX_HOUR_ROWS = 24 * 93

Equipment = Annotated[
    str | None, Query(description="A machine's id (`cnc-01`) or path; not with `line`.")
]
Line = Annotated[str | None, Query(description="A line's name (`line-1`) or path.")]
Start = Annotated[str, Query(description="From (ISO 8601, or relative: `-24h`).")]
End = Annotated[str, Query(description="Until (ISO 8601, or relative: `now`).")]


def _analytics(ctx: ApiContext) -> Analytics:
    if ctx.analytics is None:
        raise ApiError(
            404, "not_found", None, "this server has no machines with a state tag (no analytics)"
        )
    return ctx.analytics


def _range(ctx: ApiContext, start: str, end: str) -> tuple[int, int]:
    now = ctx.clock()
    a = parse_time(start, now_ns=now, field="start")
    b = parse_time(end, now_ns=now, field="end")
    if b <= a:
        raise PayloadError("end", "end: must be after start")
    if b - a > _MAX_RANGE_NS:
        raise PayloadError("end", "end: at most 400 days after start")
    return a, b


Group = Annotated[
    Literal["hour", "shift", "day", "none"],
    Query(description="One row per UTC hour, per shift worked, per local day, or one."),
]


@router.get("/oee", responses=_ERRORS, summary="OEE of a machine, a line or the plant")
async def get_oee(
    ctx: Ctx,
    principal: Caller,
    *,
    equipment: Equipment = None,
    line: Line = None,
    start: Start = "-24h",
    end: End = "now",
    group: Group = "none",
) -> dict[str, Any]:
    """Availability, performance, quality, OEE and the six big losses.

    Components (planned, run and ideal time, parts, loss times) are summed over the
    machines and the group before the ratios are taken, so a line's OEE is weighted by
    planned time and parts. Closed hours come from the store; the rest is computed now.
    """
    service = _analytics(ctx)
    a, b = _range(ctx, start, end)
    if group == "hour" and b - a > _MAX_HOUR_ROWS * 3_600 * 10**9:
        raise PayloadError("group", "group: hour rows for at most 93 days; use day or shift")
    machines = service.select(equipment=equipment or None, line=line or None, oee_only=True)
    machines = scope_machines(
        principal, machines, _path, named=equipment or None, line=line or None
    )
    rows = []
    for key, lo, hi, summary in await service.oee(machines, a, b, group):
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
        "equipment": [m.id for m in machines],
        "start": format_ns(a),
        "end": format_ns(b),
        "group": group,
        "rows": rows,
    }


def _path(machine: Machine) -> str:
    return machine.path


def _event_out(e: StopEvent) -> dict[str, Any]:
    m = e.machine
    a = e.assignment
    return {
        "equipment": m.id,
        "path": m.path,
        "start": format_ns(e.start_ns),
        "start_ns": e.start_ns,
        "end": None if e.ongoing else format_ns(e.end_ns),
        "duration_s": (e.end_ns - e.start_ns) / 1e9,
        "ongoing": e.ongoing,
        "start_known": e.start_known,
        "state": e.state,
        "reason": e.reason,
        "reason_label": m.reason_labels.get(e.reason),
        "loss": e.loss,
        "micro_stop": e.micro,
        "unplanned_s": e.unplanned_ns / 1e9,
        "planned_stop_s": (e.end_ns - e.start_ns - e.unplanned_ns) / 1e9,
        "shift": e.shift,
        "assigned": None
        if a is None
        else {
            "user": a.user,
            "comment": a.comment,
            "at": format_ns(a.assigned_ns),
            "previous": a.previous,
        },
    }


@router.get("/downtime", responses=_ERRORS, summary="Stop events")
async def get_downtime(
    ctx: Ctx,
    principal: Caller,
    *,
    equipment: Equipment = None,
    line: Line = None,
    start: Start = "-24h",
    end: End = "now",
    micro: Annotated[
        Literal["include", "exclude", "only"], Query(description="Micro-stops too, not, or only.")
    ] = "include",
) -> dict[str, Any]:
    """The stops overlapping the range: start, end, duration, reason, loss class,
    micro-stop flag, and the part of it inside planned production time."""
    service = _analytics(ctx)
    a, b = _range(ctx, start, end)
    machines = service.select(equipment=equipment or None, line=line or None)
    machines = scope_machines(
        principal, machines, _path, named=equipment or None, line=line or None
    )
    events = await service.events(machines, a, b)
    if micro != "include":
        events = [e for e in events if e.micro == (micro == "only")]
    return {"start": format_ns(a), "end": format_ns(b), "events": [_event_out(e) for e in events]}


@router.get("/downtime/pareto", responses=_ERRORS, summary="Downtime Pareto")
async def get_pareto(
    ctx: Ctx,
    principal: Caller,
    *,
    by: Annotated[
        Literal["reason", "equipment", "shift"], Query(description="What the bars are.")
    ] = "reason",
    equipment: Equipment = None,
    line: Line = None,
    start: Start = "-24h",
    end: End = "now",
) -> dict[str, Any]:
    """Unplanned downtime inside the range per reason, machine or shift, largest first,
    with its share and the cumulative share. Micro-stops are counted apart (their own
    count and time) and not in ``stops`` and ``downtime_s``."""
    service = _analytics(ctx)
    a, b = _range(ctx, start, end)
    machines = service.select(equipment=equipment or None, line=line or None)
    machines = scope_machines(
        principal, machines, _path, named=equipment or None, line=line or None
    )
    events = await service.events(machines, a, b)
    bars: dict[str, dict[str, Any]] = defaultdict(
        lambda: {"stops": 0, "downtime_s": 0.0, "micro_stops": 0, "micro_stop_s": 0.0}
    )
    for e in events:
        m = e.machine
        seconds = e.unplanned_in_range_ns / 1e9
        if seconds <= 0:
            continue
        if by == "reason":
            key, label = str(e.reason), m.reason_labels.get(e.reason)
        elif by == "equipment":
            key, label = m.id, m.path
        else:
            key, label = e.shift or "", e.shift
        bar = bars[key]
        bar["key"], bar["label"] = key, label
        if e.micro:
            bar["micro_stops"] += 1
            bar["micro_stop_s"] += seconds
        else:
            bar["stops"] += 1
            bar["downtime_s"] += seconds
    rows = sorted(bars.values(), key=lambda r: (-r["downtime_s"], -r["micro_stop_s"], r["key"]))
    total = sum(r["downtime_s"] for r in rows)
    running = 0.0
    for r in rows:
        running += r["downtime_s"]
        r["share"] = r["downtime_s"] / total if total else None
        r["cumulative_share"] = running / total if total else None
    return {"start": format_ns(a), "end": format_ns(b), "by": by, "rows": rows}


class ReasonIn(BaseModel):
    """An operator's reason for a stop."""

    model_config = ConfigDict(extra="forbid")

    reason: int = Field(ge=0, description="The reason code (the `down_reason` tag's codes).")
    user: str | None = Field(
        None,
        min_length=1,
        max_length=200,
        description="Who assigns it: the logged-in user; if sent, it must be that name.",
    )
    comment: str = Field("", max_length=2000, description="Why; kept with it.")


@router.put(
    "/downtime/{equipment:path}/{start}",
    dependencies=[OPERATE],
    responses={**_ERRORS, 400: {"model": ErrorEnvelope}},
    summary="Assign or correct a stop's reason",
    openapi_extra=audited("downtime.reason"),
)
async def put_reason(
    ctx: Ctx, request: Request, *, principal: Caller, equipment: str, start: str, body: ReasonIn
) -> dict[str, Any]:
    """Give the stop of ``equipment`` beginning at ``start`` (ISO 8601 or the event's
    ``start_ns``) a reason. Stored durably with who and when before the answer, and
    audited; the hours it spans are recomputed with it."""
    service = _analytics(ctx)
    machine = service.machine(equipment)
    scope_machines(principal, [machine], _path, named=equipment)
    if start.isdigit():
        start_ns = int(start)
    else:
        start_ns = parse_time(start, now_ns=ctx.clock(), field="start")
    user = acting_user(request, body.user) or body.user or UNNAMED
    # named before acting, so a refused assignment is audited with its target too
    note(
        request,
        target=f"{machine.path}@{start_ns}",
        detail={"reason": body.reason, "comment": body.comment},
    )
    event = await service.assign_reason(
        machine, start_ns, body.reason, user=user, comment=body.comment
    )
    return _event_out(event)
