"""The audit log: ``GET /api/v1/audit``, every audited write in order, filtered."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from shopfloor.server.api.auth import ADMIN
from shopfloor.server.api.context import Ctx
from shopfloor.server.api.errors import ApiError
from shopfloor.server.api.schemas import ErrorEnvelope
from shopfloor.server.api.timeparse import format_ns, parse_time
from shopfloor.server.security import AuditEntry, AuditLog, Outcome

__all__ = ["router"]

router = APIRouter(prefix="/api/v1", tags=["audit"], dependencies=[ADMIN])


class AuditEntryOut(BaseModel):
    """One audited write."""

    seq: int = Field(description="Order of writing; page with `after_seq`.")
    time: str = Field(description="When (ISO 8601, UTC).")
    user: str = Field(description="Who: the authenticated user, `token:NAME`, or `cli:LOGIN`.")
    action: str = Field(description="`alarm.acknowledge`, `assets.equipment.update`, …")
    target: str = Field(description="What: an alarm's name, an equipment's ISA-95 path.")
    outcome: Outcome = Field(description="ok, rejected (4xx) or error (5xx).")
    client: str = Field(description="The client's address as the server saw it.")
    detail: dict[str, Any] = Field(
        description="Before and after of an edit, an action's comment, a rejection's error "
        "and what was sent, the HTTP status."
    )
    hash: str = Field(description="The entry's link in the hash chain (SHA-256, hex).")


class ChainOut(BaseModel):
    """Whether the audit log's hash chain holds."""

    intact: bool = Field(description="True when every row follows from the rows before it.")
    rows: int = Field(description="Rows checked.")
    head_seq: int = Field(description="The last row's seq.")
    head_hash: str = Field(
        description="The last row's hash: kept elsewhere, it also shows rows cut off the end."
    )
    broken_seq: int | None = Field(
        description="The first row that does not follow (edited, inserted or deleted before it)."
    )
    unchained: int = Field(description="Rows written before the log was chained: not checked.")


def _out(e: AuditEntry) -> AuditEntryOut:
    return AuditEntryOut(
        seq=e.seq,
        time=format_ns(e.ts_ns),
        user=e.user,
        action=e.action,
        target=e.target,
        outcome=e.outcome,
        client=e.client,
        detail=dict(e.detail),
        hash=e.hash,
    )


MAX_SEQ = 2**63 - 1
"""The largest sequence number SQLite stores (a larger ``after_seq`` is a 422, not a 500)."""


@router.get(
    "/audit",
    summary="The audit log",
    response_model=list[AuditEntryOut],
    responses={404: {"model": ErrorEnvelope}, 422: {"model": ErrorEnvelope}},
)
async def audit_log(
    ctx: Ctx,
    *,
    since: Annotated[str | None, Query(description="From this time (ISO 8601, `-8h`).")] = None,
    until: Annotated[str | None, Query(description="Before this time.")] = None,
    user: Annotated[str | None, Query(description="Only this user's writes.")] = None,
    action: Annotated[str | None, Query(description="Only this action.")] = None,
    target: Annotated[
        str | None, Query(description="Only targets starting with this (an area's path).")
    ] = None,
    outcome: Annotated[Outcome | None, Query(description="Only this outcome.")] = None,
    after_seq: Annotated[
        int, Query(ge=0, le=MAX_SEQ, description="Only entries after this seq.")
    ] = 0,
    before_seq: Annotated[
        int | None,
        Query(ge=1, le=MAX_SEQ, description="Only entries before this seq (page back)."),
    ] = None,
    order: Annotated[
        Literal["asc", "desc"],
        Query(description="`asc`: oldest first (the default); `desc`: newest first."),
    ] = "asc",
    limit: Annotated[int, Query(ge=1, le=10_000, description="The most entries.")] = 1000,
) -> list[AuditEntryOut]:
    """Entries in order of writing, oldest first, page with ``after_seq``; or newest first
    (``order=desc``), page back with ``before_seq``."""
    audit = _audit(ctx)
    now = ctx.clock()
    entries = await audit.entries(
        since_ns=None if since is None else parse_time(since, now_ns=now, field="since"),
        until_ns=None if until is None else parse_time(until, now_ns=now, field="until"),
        user=user,
        action=action,
        target_prefix=target,
        outcome=outcome,
        after_seq=after_seq,
        before_seq=before_seq,
        newest_first=order == "desc",
        limit=limit,
    )
    return [_out(e) for e in entries]


@router.get(
    "/audit/verify",
    summary="Check the audit log's hash chain",
    response_model=ChainOut,
    responses={404: {"model": ErrorEnvelope}},
)
async def verify_audit_log(ctx: Ctx) -> ChainOut:
    """Recompute every row's hash: ``broken_seq`` names the first row edited, inserted or
    deleted behind the log's back (its triggers dropped)."""
    report = await _audit(ctx).verify()
    return ChainOut(
        intact=report.broken_seq is None,
        rows=report.rows,
        head_seq=report.head_seq,
        head_hash=report.head_hash,
        broken_seq=report.broken_seq,
        unchained=report.unchained,
    )


def _audit(ctx: Ctx) -> AuditLog:
    if ctx.audit is None:
        raise ApiError(404, "not_found", None, "this server keeps no audit log")
    return ctx.audit
