"""Anomaly scores and remaining useful life: ``GET /api/v1/anomaly`` and ``GET /api/v1/rul``.

Both read what :class:`~shopfloor.server.analytics.anomaly_monitor.AnomalyMonitor` keeps
(the latest scores, the recent anomalies, the latest RUL estimates); ``/anomaly`` with an
``equipment`` also reads that machine's stored score tag over a range. Scaled out
(``analytics.partitions``) another server may score a machine, so ``/anomaly`` answers
the latest scores and the events (of the range) from the historian on every server
(:mod:`~shopfloor.server.analytics.anomaly_stored`).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from starlette.responses import Response

from shopfloor.errors import PayloadError, UnknownTagError
from shopfloor.server.analytics.anomaly_monitor import AnomalyMonitor, RulAnswer, score_tag
from shopfloor.server.analytics.anomaly_stored import stored_events, stored_latest
from shopfloor.server.analytics.rul import NoEstimate
from shopfloor.server.api.auth import READ
from shopfloor.server.api.context import Ctx
from shopfloor.server.api.convert import json_response
from shopfloor.server.api.errors import ApiError
from shopfloor.server.api.schemas import ErrorEnvelope
from shopfloor.server.api.scoping import Caller, scope_machines
from shopfloor.server.api.timeparse import format_ns, parse_time

__all__ = ["router"]

router = APIRouter(prefix="/api/v1", tags=["anomaly"], dependencies=[READ])

_HOUR_NS = 3_600_000_000_000
_ERRORS: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorEnvelope, "description": "Not enabled, or no such machine."},
    422: {"model": ErrorEnvelope, "description": "A parameter is invalid; `field` names it."},
}
EquipmentQuery = Annotated[
    str | None,
    Query(description="The machine's equipment path or id; all machines when left out."),
]


def _monitor(request: Request, section: str) -> AnomalyMonitor:
    monitor: AnomalyMonitor | None = getattr(request.app.state, "anomaly", None)
    enabled = monitor is not None and (
        monitor.machines if section == "anomaly" else monitor.rul_machines
    )
    if monitor is None or not enabled:
        raise ApiError(
            404,
            "not_found",
            None,
            f"{'anomaly detection' if section == 'anomaly' else 'RUL estimation'} is not "
            f"enabled: set [analytics.{section}] enabled = true (it needs machines with a "
            "`state` tag and the configured tags)",
        )
    return monitor


def _second(pair: tuple[str, str]) -> str:
    return pair[1]


def _pick(equipment: str | None, known: list[tuple[str, str]]) -> list[tuple[str, str]]:
    if equipment is None:
        return known
    chosen = [(i, p) for i, p in known if equipment in (i, p)]
    if not chosen:
        raise ApiError(
            404,
            "not_found",
            "equipment",
            f"no watched machine {equipment!r} ({', '.join(i for i, _ in known)})",
        )
    return chosen


@router.get(
    "/anomaly",
    summary="Anomaly scores and recent anomalies",
    description="Per watched machine: its tags, the latest score (`score` above 1 is "
    "anomalous; 1000 marks a Bad point of a watched tag), with the detector and tag that "
    "gave it; the recent anomalies (`events`, newest last, at most 1000 kept in memory). "
    "With `equipment`, also `scores`: the stored score points of `[start, end)` "
    "(default: the last hour). With `analytics.partitions` (several API servers), "
    "`latest` and `events` are read from the stored scores on every server, `events` "
    "those of `[start, end)` (the newest 1000).",
    responses=_ERRORS,
)
async def anomaly(
    ctx: Ctx,
    request: Request,
    *,
    principal: Caller,
    equipment: EquipmentQuery = None,
    start: Annotated[
        str | None, Query(description="Start of `scores` (ISO 8601 or `now-1h`).")
    ] = None,
    end: Annotated[str | None, Query(description="End of `scores`, exclusive.")] = None,
) -> Response:
    """The anomaly monitor's state, for one machine or all."""
    monitor = _monitor(request, "anomaly")
    machines = _pick(equipment, [(m.id, m.path) for m in monitor.machines])
    machines = scope_machines(principal, machines, _second, named=equipment, allow_empty=True)
    paths = {p for _, p in machines}
    specs = [m for m in monitor.machines if m.path in paths]
    if equipment is not None or monitor.partitioned:
        now = ctx.clock()
        end_ns = parse_time(end, now_ns=now, field="end") if end else now
        start_ns = parse_time(start, now_ns=now, field="start") if start else end_ns - _HOUR_NS
        if start_ns >= end_ns:
            raise PayloadError("start", "start must be before end")
    if monitor.partitioned:  # scaled out: the same answer from every server, as stored
        latest = await stored_latest(ctx.historian, specs)
        events = await stored_events(ctx.historian, specs, start_ns, end_ns)
    else:
        latest = {p: monitor.latest[p] for p in paths if p in monitor.latest}
        events = [e for e in monitor.events if e.equipment in paths]
    body: dict[str, Any] = {
        "machines": [
            {
                "equipment": m.path,
                "id": m.id,
                "score_tag": score_tag(m.path),
                "tags": list(m.tags),
                "latest": None
                if m.path not in latest
                else dict(
                    zip(
                        ("time", "score", "cause"),
                        (format_ns(latest[m.path][0]), *latest[m.path][1:]),
                        strict=True,
                    )
                ),
            }
            for m in specs
        ],
        "events": [
            {
                "equipment": e.equipment,
                "time": format_ns(e.ts_ns),
                "score": e.score,
                "cause": e.cause,
            }
            for e in events
        ],
    }
    if equipment is not None:
        try:
            table = await ctx.historian.read_raw(score_tag(specs[0].path), start_ns, end_ns)
        except UnknownTagError:
            body["scores"] = []
        else:
            ts = table.column("ts").cast("int64").to_pylist()
            values = table.column("value").to_pylist()
            body["scores"] = [
                {"time": format_ns(t), "score": v} for t, v in zip(ts, values, strict=True)
            ]
    return json_response(body)


def _rul_row(machine_id: str, path: str, answer: RulAnswer | None) -> dict[str, Any]:
    row: dict[str, Any] = {"equipment": path, "id": machine_id}
    if answer is None:
        row |= {"status": "pending", "reason": "not estimated yet"}
        return row
    row |= {"indicator": answer.indicator, "computed": format_ns(answer.computed_ns)}
    result = answer.result
    if isinstance(result, NoEstimate):
        row |= {"status": "no_estimate", "reason": result.reason}
        return row
    row |= {
        "status": "estimate",
        "as_of": format_ns(result.as_of_ns),
        "threshold": result.threshold,
        "rul_hours": result.rul_s / 3600,
        "failure_time": format_ns(result.failure_ns),
        "interval": {
            "low": format_ns(result.low_ns),
            "high": None if result.high_ns is None else format_ns(result.high_ns),
            "confidence": result.confidence,
        },
        "model": {
            "kind": result.model,
            "level": result.level,
            "slope_per_hour": result.slope,
            "points": result.points,
            "r2": result.r2,
        },
    }
    return row


@router.get(
    "/rul",
    summary="Remaining useful life per machine",
    description="Per machine, the latest estimate of when its health indicator "
    "(`[analytics.rul] indicator`) reaches `threshold`: `rul_hours`, `failure_time` and "
    "its `interval` at `confidence`, the fitted `model` (`linear` or `exponential`, the "
    "level and growth per hour now, buckets fitted, r²), `as_of`; or `status` "
    "`no_estimate` with the `reason` (too few points, no upward trend), or `pending`.",
    responses=_ERRORS,
)
async def rul(request: Request, principal: Caller, equipment: EquipmentQuery = None) -> Response:
    """The latest RUL estimates, for one machine or all."""
    monitor = _monitor(request, "rul")
    machines = _pick(equipment, monitor.rul_machines)
    machines = scope_machines(principal, machines, _second, named=equipment, allow_empty=True)
    return json_response({"machines": [_rul_row(i, p, monitor.ruls.get(p)) for i, p in machines]})
