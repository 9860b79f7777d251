"""Alarms: what stands now, the journal, and the operator's actions.

``GET /api/v1/alarms`` lists alarms (by default those not normal, most urgent first);
``GET /api/v1/alarms/journal`` reads the journal; ``POST /api/v1/alarms/{action}``
acknowledges, shelves, unshelves, comments on, or takes out of (returns to) service one
alarm. Every action is journaled with its user and comment before it is answered.

The acting user is the logged-in user or API token (a body ``user``, if sent, must be
that name: :mod:`shopfloor.server.security.actor`). Every action is also audited, refused ones too
(:mod:`shopfloor.server.api.audit_trail`).
"""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from shopfloor.server.api.audit_trail import UNNAMED, audited, note
from shopfloor.server.api.auth import OPERATE, READ
from shopfloor.server.api.context import ApiContext, Ctx
from shopfloor.server.api.errors import ApiError
from shopfloor.server.api.schemas import ErrorEnvelope
from shopfloor.server.api.scoping import Caller, require_path
from shopfloor.server.api.timeparse import format_ns, parse_duration, parse_time
from shopfloor.server.rules.alarms import AlarmState, Transition
from shopfloor.server.rules.engine import ActiveAlarm, AlarmEngine
from shopfloor.server.rules.journal import JournalEntry
from shopfloor.server.security import Principal, acting_user
from shopfloor.server.security.scoping import allowed, is_scoped

__all__ = ["router"]

router = APIRouter(prefix="/api/v1/alarms", tags=["alarms"], dependencies=[READ])

_PRIORITY_ORDER = {"critical": 0, "high": 1, "medium": 2, "low": 3}
_ERRORS: dict[int | str, dict[str, object]] = {
    400: {"model": ErrorEnvelope},
    404: {"model": ErrorEnvelope},
    422: {"model": ErrorEnvelope},
}


class AlarmOut(BaseModel):
    """One alarm and where it stands."""

    name: str = Field(description="The alarm's name (its rule's).")
    tag: str = Field(description="The tag it watches.")
    kind: str = Field(description="HH, H, L, LL, state or bad_quality.")
    priority: str = Field(description="critical, high, medium or low.")
    limit: float | None = Field(description="The limit or state; null for bad_quality.")
    state: AlarmState = Field(description="ISA-18.2 state.")
    condition: bool = Field(description="Whether the condition stands (after delays).")
    since: str = Field(description="When the state began (ISO 8601, UTC).")
    shelved_until: str | None = Field(description="When a shelve ends.")
    value: float | None = Field(description="The value that last changed its condition.")
    message: str = Field(description="The alarm's text with that value.")


class TransitionOut(BaseModel):
    """A journal entry."""

    seq: int | None = Field(description="Order of writing (null in an action's answer).")
    alarm: str
    event: str = Field(description="activated, cleared, acknowledged, shelved, ...")
    time: str = Field(description="When it happened (ISO 8601, UTC).")
    before: AlarmState
    after: AlarmState
    user: str
    comment: str
    value: float | None


class _Action(BaseModel):
    model_config = ConfigDict(extra="forbid")

    alarm: str = Field(min_length=1, description="The alarm's name.")
    user: str | None = Field(
        None,
        min_length=1,
        max_length=200,
        description="Who acts: the logged-in user; if sent, it must be that name (else 403).",
    )
    comment: str = Field("", max_length=2000, description="Why; kept in the journal.")


class AcknowledgeIn(_Action):
    """Acknowledge an alarm."""


class ShelveIn(_Action):
    """Shelve an alarm for a while."""

    duration: str = Field(description="How long (`30m`, `8h`); at most 24 hours.")


class CommentIn(_Action):
    """A comment on an alarm."""

    comment: str = Field(min_length=1, max_length=2000, description="The comment.")


class ServiceIn(_Action):
    """Take an alarm out of service, or return it."""

    in_service: bool = Field(description="false: out of service (maintenance); true: back.")


_MAX_SHELVE_NS = 24 * 3600 * 10**9


def _engine(ctx: ApiContext) -> AlarmEngine:
    if ctx.alarms is None:
        raise ApiError(404, "not_found", None, "this server runs no alarm engine")
    return ctx.alarms


def _user(request: Request, body: _Action) -> str:
    """The acting user (the one place: :func:`~shopfloor.server.security.acting_user`)."""
    return acting_user(request, body.user) or body.user or UNNAMED


def _done(request: Request, body: _Action, done: Transition | None, **detail: object) -> None:
    """Tell the audit which alarm was acted on and how."""
    if done is not None:
        detail.update(event=done.event.value, before=done.before, after=done.after)
    note(request, target=body.alarm, detail={"comment": body.comment, **detail})


def _may_see(engine: AlarmEngine, principal: Principal | None, alarm: str) -> bool:
    """Whether the alarm's tag lies within the principal's sites (an alarm whose rule is
    gone has no known place: only an unscoped user sees its journal entries)."""
    if not is_scoped(principal):
        return True
    rule = engine.rule(alarm)
    return rule is not None and allowed(principal, rule.tag)


def _check_scope(engine: AlarmEngine | None, principal: Principal | None, alarm: str) -> None:
    """403 for an alarm on a tag outside the principal's sites (an unknown alarm, or no
    engine, is left for the route to answer 404)."""
    rule = None if engine is None else engine.rule(alarm)
    if rule is not None:
        what = f"the alarm {alarm!r} (on the tag {rule.tag!r})"
        require_path(principal, rule.tag, field="alarm", what=what)


def _alarm_out(a: ActiveAlarm) -> AlarmOut:
    s = a.status
    return AlarmOut(
        name=a.rule.name,
        tag=a.rule.tag,
        kind=a.rule.kind,
        priority=a.rule.priority,
        limit=a.rule.limit,
        state=s.state,
        condition=s.condition,
        since=format_ns(s.since_ns),
        shelved_until=None if s.shelved_until_ns is None else format_ns(s.shelved_until_ns),
        value=a.value,
        message=a.rule.text(a.value),
    )


def _transition_out(t: Transition | JournalEntry) -> TransitionOut:
    return TransitionOut(
        seq=t.seq if isinstance(t, JournalEntry) else None,
        alarm=t.alarm,
        event=t.event.value,
        time=format_ns(t.ts_ns),
        before=t.before,
        after=t.after,
        user=t.user,
        comment=t.comment,
        value=t.value,
    )


@router.get("", summary="Alarms and their states", response_model=list[AlarmOut])
async def list_alarms(
    ctx: Ctx,
    principal: Caller,
    state: Annotated[
        Literal["standing", "all"],
        Query(description="`standing`: every alarm not normal; `all`: every alarm."),
    ] = "standing",
) -> list[AlarmOut]:
    """Unacknowledged first, then by priority, then the newest first."""
    engine = _engine(ctx)
    rows = [
        a for a in engine.alarms(active_only=state == "standing") if allowed(principal, a.rule.tag)
    ]
    rows.sort(
        key=lambda a: (
            a.state is not AlarmState.UNACKNOWLEDGED,
            _PRIORITY_ORDER.get(a.rule.priority, 9),
            -a.status.since_ns,
        )
    )
    return [_alarm_out(a) for a in rows]


@router.get(
    "/journal",
    summary="The alarm journal",
    response_model=list[TransitionOut],
    responses=_ERRORS,
)
async def journal(
    ctx: Ctx,
    principal: Caller,
    *,
    alarm: Annotated[str | None, Query(description="Only this alarm.")] = None,
    start: Annotated[str | None, Query(description="From this time (ISO 8601, `-8h`).")] = None,
    end: Annotated[str | None, Query(description="Before this time.")] = None,
    after_seq: Annotated[int, Query(ge=0, description="Only entries after this seq.")] = 0,
    before_seq: Annotated[
        int | None, Query(ge=1, description="Only entries before this seq.")
    ] = None,
    order: Annotated[
        Literal["asc", "desc"],
        Query(description="`asc`: in order of writing; `desc`: newest first."),
    ] = "asc",
    limit: Annotated[int, Query(ge=1, le=10_000, description="The most entries.")] = 1000,
) -> list[TransitionOut]:
    """Entries in order of writing, paged with ``after_seq`` (the last ``seq`` seen); or,
    with ``order=desc``, newest first, paged back with ``before_seq`` (the oldest seen)."""
    engine = _engine(ctx)
    if alarm is not None:
        _check_scope(engine, principal, alarm)
    now = ctx.clock()
    entries = await engine.journal(
        alarm=alarm,
        start_ns=None if start is None else parse_time(start, now_ns=now, field="start"),
        end_ns=None if end is None else parse_time(end, now_ns=now, field="end"),
        after_seq=after_seq,
        before_seq=before_seq,
        newest_first=order == "desc",
        limit=limit,
    )
    return [_transition_out(e) for e in entries if _may_see(engine, principal, e.alarm)]


class FloodOut(BaseModel):
    """Adjacent 10-minute periods each with more than 10 alarms."""

    start: str
    end: str
    alarms: int


class BadActorOut(BaseModel):
    """One of the most frequent alarms."""

    alarm: str
    count: int
    share: float = Field(description="Its share of all activations (0..1).")


class ChatterOut(BaseModel):
    """An alarm that came in 3 or more times within 60 s."""

    alarm: str
    episodes: int = Field(description="How often it did.")
    activations: int = Field(description="How often it came in at all.")


class KpisOut(BaseModel):
    """ISA-18.2 / EEMUA 191 alarm performance of a period."""

    start: str
    end: str
    activations: int = Field(description="Alarms that came in.")
    average_per_10min: float = Field(description="Target: about 1 per operator.")
    peak_per_10min: int
    share_over_manageable: float = Field(description="10-minute periods above 2 (0..1).")
    floods: list[FloodOut] = Field(description="Periods of more than 10 in 10 minutes.")
    share_in_flood: float = Field(description="Time in a flood (0..1); target below 0.01.")
    bad_actors: list[BadActorOut] = Field(description="The 10 most frequent alarms.")
    chattering: list[ChatterOut]


@router.get("/kpis", summary="Alarm performance", response_model=KpisOut, responses=_ERRORS)
async def kpis(
    ctx: Ctx,
    principal: Caller,
    start: Annotated[str, Query(description="From (ISO 8601 or relative: `-24h`).")] = "-24h",
    end: Annotated[str, Query(description="Until (default: now).")] = "now",
) -> KpisOut:
    """Alarm rate per 10 minutes, floods, bad actors and chattering, from the journal.

    The rates are the plant's; a user limited to sites sees only its own alarms among
    the bad actors and chattering ones."""
    now = ctx.clock()
    lo = parse_time(start, now_ns=now, field="start")
    hi = parse_time(end, now_ns=now, field="end")
    if hi <= lo:
        raise ApiError(422, "invalid_parameter", "end", "end must be after start")
    engine = _engine(ctx)
    k = await engine.kpis(start_ns=lo, end_ns=hi)
    return KpisOut(
        start=format_ns(k.start_ns),
        end=format_ns(k.end_ns),
        activations=k.activations,
        average_per_10min=k.average_per_10min,
        peak_per_10min=k.peak_per_10min,
        share_over_manageable=k.share_over_manageable,
        floods=[
            FloodOut(start=format_ns(f.start_ns), end=format_ns(f.end_ns), alarms=f.alarms)
            for f in k.floods
        ],
        share_in_flood=k.share_in_flood,
        bad_actors=[
            BadActorOut(alarm=b.alarm, count=b.count, share=b.share)
            for b in k.bad_actors
            if _may_see(engine, principal, b.alarm)
        ],
        chattering=[
            ChatterOut(alarm=c.alarm, episodes=c.episodes, activations=c.activations)
            for c in k.chattering
            if _may_see(engine, principal, c.alarm)
        ],
    )


@router.post(
    "/acknowledge",
    dependencies=[OPERATE],
    openapi_extra=audited("alarm.acknowledge"),
    summary="Acknowledge an alarm",
    response_model=TransitionOut,
    responses=_ERRORS,
)
async def acknowledge(
    ctx: Ctx, request: Request, principal: Caller, body: AcknowledgeIn
) -> TransitionOut:
    """Unacknowledged → acknowledged, returned unacknowledged → normal."""
    _check_scope(ctx.alarms, principal, body.alarm)
    user = _user(request, body)
    done = await _engine(ctx).acknowledge(body.alarm, user=user, comment=body.comment)
    _done(request, body, done)
    return _transition_out(done)


@router.post(
    "/shelve",
    dependencies=[OPERATE],
    openapi_extra=audited("alarm.shelve"),
    summary="Shelve an alarm",
    response_model=TransitionOut,
    responses=_ERRORS,
)
async def shelve(ctx: Ctx, request: Request, principal: Caller, body: ShelveIn) -> TransitionOut:
    """Hide an alarm for ``duration``; it comes back by itself, unacknowledged if it stands."""
    _check_scope(ctx.alarms, principal, body.alarm)
    length = parse_duration(body.duration, field="duration")
    if not 0 < length <= _MAX_SHELVE_NS:
        raise ApiError(422, "invalid_parameter", "duration", "a shelve lasts up to 24 hours")
    engine = _engine(ctx)
    until = ctx.clock() + length
    done = await engine.shelve(
        body.alarm, until_ns=until, user=_user(request, body), comment=body.comment
    )
    _done(request, body, done, duration=body.duration)
    return _transition_out(done)


@router.post(
    "/unshelve",
    dependencies=[OPERATE],
    openapi_extra=audited("alarm.unshelve"),
    summary="End a shelve now",
    response_model=TransitionOut,
    responses=_ERRORS,
)
async def unshelve(
    ctx: Ctx, request: Request, principal: Caller, body: AcknowledgeIn
) -> TransitionOut:
    """The alarm is shown again, unacknowledged if its condition stands."""
    _check_scope(ctx.alarms, principal, body.alarm)
    user = _user(request, body)
    done = await _engine(ctx).unshelve(body.alarm, user=user, comment=body.comment)
    _done(request, body, done)
    return _transition_out(done)


@router.post(
    "/comment",
    dependencies=[OPERATE],
    openapi_extra=audited("alarm.comment"),
    summary="Comment on an alarm",
    response_model=TransitionOut,
    responses=_ERRORS,
)
async def comment(ctx: Ctx, request: Request, principal: Caller, body: CommentIn) -> TransitionOut:
    """A note in the journal; the state does not change."""
    _check_scope(ctx.alarms, principal, body.alarm)
    done = await _engine(ctx).comment(body.alarm, user=_user(request, body), comment=body.comment)
    _done(request, body, done)
    return _transition_out(done)


@router.post(
    "/service",
    dependencies=[OPERATE],
    openapi_extra=audited("alarm.service"),
    summary="Take an alarm out of service or return it",
    response_model=TransitionOut | None,
    responses=_ERRORS,
)
async def service(
    ctx: Ctx, request: Request, principal: Caller, body: ServiceIn
) -> TransitionOut | None:
    """Out of service (maintenance) hides the alarm until it is returned; null when the
    alarm already was where asked."""
    _check_scope(ctx.alarms, principal, body.alarm)
    done = await _engine(ctx).set_in_service(
        body.alarm, in_service=body.in_service, user=_user(request, body), comment=body.comment
    )
    _done(request, body, done, in_service=body.in_service)
    return None if done is None else _transition_out(done)
