"""Writes to equipment: ``POST /api/v1/writes`` (ask, then confirm) and the per-connector
switch ``PUT /api/v1/connectors/{name}/writes`` (an admin action; off by default).

The two steps of a write: ``{"path", "value"}`` answers a confirmation (the tag's
present value read from the device, the value to write, an opaque id valid 60 s);
``{"confirmation": id}`` within that time writes, reads back and answers the value
before and after. Every call is audited, refused ones too, with the old and new value
(:mod:`shopfloor.server.api.audit_trail`); the audit never holds a confirmation id, only
``ref``, a digest of it that ties the two entries of one write together.

Who may call what is named once here (:data:`WRITE_PERMISSION`, :data:`ADMIN_PERMISSION`,
also in each route's OpenAPI ``x-permission``) and enforced by the dependencies of
:mod:`shopfloor.server.api.auth`: reading needs ``read``, writing ``engineer``, the
switch ``admin``; the acting user is the authenticated one
(:mod:`shopfloor.server.security.actor`).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Request
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    field_validator,
)

from shopfloor.errors import ConnectorUnavailable, WriteRefused
from shopfloor.model.control import WritableTag, WriteValue
from shopfloor.server.api.audit_trail import audited, note
from shopfloor.server.api.auth import ADMIN, ENGINEER, READ
from shopfloor.server.api.context import Ctx
from shopfloor.server.api.errors import ApiError
from shopfloor.server.api.schemas import ErrorEnvelope
from shopfloor.server.api.scoping import Caller, require_path
from shopfloor.server.security import acting_user
from shopfloor.server.security.scoping import allowed
from shopfloor.server.writes import WriteDenied, WriteService, reference

__all__ = [
    "ADMIN_PERMISSION",
    "PERMISSION_KEY",
    "READ_PERMISSION",
    "WRITE_PERMISSION",
    "router",
]

router = APIRouter(prefix="/api/v1", tags=["writes"])

WRITE_PERMISSION = "equipment.write"
"""Needed to ask for and confirm a write to equipment."""
ADMIN_PERMISSION = "connectors.admin"
"""Needed to turn writes through a connector on or off."""
READ_PERMISSION = "equipment.read"
"""Needed to see which connectors and tags can be written."""
PERMISSION_KEY = "x-permission"
"""The OpenAPI extension that names the permission of each route here."""

_STATUS = {
    "unknown_tag": 404,
    "unknown_connector": 404,
    "writes_disabled": 409,
    "confirmation_unknown": 409,
    "confirmation_used": 409,
    "confirmation_expired": 409,
    "confirmation_mismatch": 409,
    "confirmations_unavailable": 503,
}
_ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorEnvelope} for status in (404, 409, 422, 502, 503)
}

Value = StrictBool | StrictInt | StrictFloat | StrictStr


class WriteIn(BaseModel):
    """Ask for a write (``path`` and ``value``), or confirm one (``confirmation``)."""

    model_config = ConfigDict(extra="forbid")

    path: str | None = Field(
        None, min_length=1, max_length=512, description="The tag's ISA-95 path (to ask)."
    )
    value: Value | None = Field(
        None,
        description="The value in engineering units, a state label, true/false, or text (to ask).",
    )
    confirmation: str | None = Field(
        None,
        min_length=1,
        max_length=100,
        description="The id the first call answered (to confirm); `path` and `value`, if "
        "sent with it, must be those asked for.",
    )
    user: str | None = Field(
        None, max_length=200, description="Who writes (else the X-Shopfloor-User header)."
    )

    @field_validator("value", mode="before")
    @classmethod
    def _scalar(cls, value: object) -> object:
        # before the union: its per-member errors would name `value.bool`, not `value`
        if value is not None and not isinstance(value, bool | int | float | str):
            raise ValueError("a number, true or false, or a string")
        return value


class ConfirmOut(BaseModel):
    """The first step's answer: what would be written, and how to confirm it."""

    status: str = Field("confirm", description="`confirm`: send `confirmation` back.")
    confirmation: str = Field(description="Single-use id to send back to write.")
    expires_in_s: float = Field(description="Seconds it stays valid.")
    path: str = Field(description="The tag.")
    connector: str = Field(description="The connector that writes it.")
    unit: str = Field(description="Engineering unit of the values.")
    old: WriteValue | None = Field(description="The tag's value read from the device now.")
    new: WriteValue = Field(description="The value that will be written.")


class WrittenOut(BaseModel):
    """The second step's answer: the value before and the value read back after."""

    status: str = Field("written", description="`written`.")
    path: str = Field(description="The tag.")
    connector: str = Field(description="The connector that wrote it.")
    unit: str = Field(description="Engineering unit of the values.")
    old: WriteValue | None = Field(description="The value read just before the write.")
    requested: WriteValue = Field(description="The value written.")
    new: WriteValue | None = Field(description="The value read back from the device.")


class SwitchIn(BaseModel):
    """Turn writes through a connector on or off."""

    model_config = ConfigDict(extra="forbid")

    enabled: StrictBool = Field(description="true: writes allowed; false: refused.")
    user: str | None = Field(
        None, max_length=200, description="Who decides (else the X-Shopfloor-User header)."
    )


class SwitchOut(BaseModel):
    """A connector's writes switch."""

    connector: str
    enabled: bool = Field(description="Whether writes through the connector are allowed.")
    was: bool | None = Field(None, description="The switch before this change.")


class WritableTagOut(BaseModel):
    """A tag configured writable."""

    path: str
    connector: str
    data_type: str = Field(description="Wire type on the device.")
    unit: str
    eng_low: float | None = Field(description="Lowest value accepted, if limited.")
    eng_high: float | None = Field(description="Highest value accepted, if limited.")
    states: dict[str, str] = Field(description="Labels of an enumerated tag, by number.")


class WritesOut(BaseModel):
    """Connectors that can write, their switches, and the writable tags."""

    connectors: list[SwitchOut]
    tags: list[WritableTagOut]


def _service(ctx: Ctx) -> WriteService:
    if ctx.writes is None:
        raise ApiError(404, "not_found", None, "this server runs no connector that can write")
    return ctx.writes


def _denied(err: WriteDenied) -> ApiError:
    return ApiError(_STATUS.get(err.code, 409), err.code, err.field, err.message)


def _device_error(err: ConnectorUnavailable | WriteRefused) -> ApiError:
    if isinstance(err, ConnectorUnavailable):
        return ApiError(503, "device_unavailable", None, f"the device does not answer: {err}")
    return ApiError(502, "write_refused", None, f"the device refused the write: {err}")


def _user(request: Request, claimed: str | None) -> str:
    user = acting_user(request, claimed)
    if user is None:  # pragma: no cover - the routes need a login
        raise ApiError(401, "unauthorized", None, "writes are audited: log in first")
    return user


def _tag_out(tag: WritableTag) -> WritableTagOut:
    return WritableTagOut(
        path=tag.path,
        connector=tag.connector,
        data_type=tag.data_type,
        unit=tag.unit,
        eng_low=tag.eng_low,
        eng_high=tag.eng_high,
        states={str(k): v for k, v in tag.states},
    )


@router.get(
    "/writes",
    summary="What can be written",
    description="The connectors run by this server that can write, whether writes through "
    "each are enabled, and every tag configured `writable = true`.",
    response_model=WritesOut,
    openapi_extra={PERMISSION_KEY: READ_PERMISSION},
    responses=_ERRORS,
    dependencies=[READ],
)
async def list_writes(ctx: Ctx, principal: Caller) -> WritesOut:
    """Switches and writable tags (those within the caller's sites)."""
    service = _service(ctx)
    await service.refresh()  # another API server may have turned a switch
    return WritesOut(
        connectors=[
            SwitchOut(connector=name, enabled=service.enabled(name))
            for name in service.connectors()
        ],
        tags=[_tag_out(t) for t in service.targets() if allowed(principal, t.path)],
    )


@router.post(
    "/writes",
    summary="Write a value to equipment (ask, then confirm)",
    description="Send `path` and `value` to get a confirmation (the present value, the new "
    "one, an id valid 60 s); send `confirmation` to write, read back and get the value "
    "before and after. 409 while writes through the tag's connector are off, or for an "
    "expired, used or foreign confirmation; 422 names the field at fault (a tag not "
    "writable, a value outside its type or range); 503 when the device does not answer.",
    response_model=ConfirmOut | WrittenOut,
    openapi_extra={**audited("equipment.write"), PERMISSION_KEY: WRITE_PERMISSION},
    responses=_ERRORS,
    dependencies=[ENGINEER],
)
async def write(
    ctx: Ctx, request: Request, principal: Caller, body: WriteIn
) -> ConfirmOut | WrittenOut:
    """Ask for a write, or confirm one (a tag outside the caller's sites: 403)."""
    service = _service(ctx)
    if body.confirmation is not None:
        return await _confirm(service, request, body, body.confirmation)
    audit = _Audit(request, body.path or "", step="request", new=body.value)
    if body.path is None:
        raise ApiError(422, "invalid_parameter", "path", "path: the tag to write is missing")
    require_path(principal, body.path, field="path")
    if body.value is None:
        raise ApiError(422, "invalid_parameter", "value", "value: the value to write is missing")
    user = _user(request, body.user)
    try:
        _, tag = service.target(body.path)
    except WriteDenied as err:
        raise _denied(err) from err
    audit.add(connector=tag.connector)
    unreachable: ConnectorUnavailable | None = None
    try:  # read first: a refused request is audited with the value it would overwrite
        old = await service.present(body.path)
    except ConnectorUnavailable as err:
        old, unreachable = None, err
    audit.add(old=old)
    await service.refresh()
    try:
        service.check(body.path, body.value)
    except WriteDenied as err:
        raise _denied(err) from err
    if unreachable is not None:
        raise _device_error(unreachable)
    try:  # writes turned off meanwhile, or the shared confirmations do not answer
        ticket = await service.request(body.path, body.value, user=user, old=old)
    except WriteDenied as err:
        raise _denied(err) from err
    audit.add(new=ticket.new, ref=reference(ticket.id))
    return ConfirmOut(
        confirmation=ticket.id,
        expires_in_s=service.confirm_within_s,
        path=tag.path,
        connector=tag.connector,
        unit=tag.unit,
        old=old,
        new=ticket.new,
    )


class _Audit:
    """The audit note of one call, updated as the call learns more (a refusal is audited
    with whatever was known when it was refused)."""

    def __init__(self, request: Request, target: str, **detail: Any) -> None:
        self._request = request
        self.target = target
        self.detail = detail
        note(request, target=target, detail=detail)

    def add(self, *, target: str | None = None, **detail: Any) -> None:
        self.target = self.target if target is None else target
        self.detail.update(detail)
        note(self._request, target=self.target, detail=self.detail)


async def _confirm(
    service: WriteService, request: Request, body: WriteIn, confirmation: str
) -> WrittenOut:
    audit = _Audit(request, body.path or "", step="confirm", ref=reference(confirmation))
    user = _user(request, body.user)
    try:
        ticket = await service.take(confirmation, user=user)
    except WriteDenied as err:
        if err.path is not None:
            audit.add(target=err.path)
        raise _denied(err) from err
    path = ticket.tag.path
    audit.add(target=path, connector=ticket.tag.connector, old=ticket.old, new=ticket.new)
    if body.path is not None and body.path != path:
        raise ApiError(409, "confirmation_mismatch", "path", f"this confirmation is for {path}")
    if body.value is not None and body.value not in (ticket.new, ticket.asked):
        raise ApiError(
            409, "confirmation_mismatch", "value", f"this confirmation is for {ticket.new!r}"
        )
    try:
        done = await service.confirm(ticket)
    except WriteDenied as err:
        raise _denied(err) from err
    except (ConnectorUnavailable, WriteRefused) as err:
        raise _device_error(err) from err
    audit.add(old=done.old, new=done.new, requested=done.requested)
    return WrittenOut(
        path=path,
        connector=ticket.tag.connector,
        unit=ticket.tag.unit,
        old=done.old,
        requested=done.requested,
        new=done.new,
    )


@router.put(
    "/connectors/{name}/writes",
    summary="Allow or refuse writes through a connector (admin)",
    description="Writes to equipment are off for every connector until an admin turns "
    "them on here; the switch is kept in the server's data folder across restarts.",
    response_model=SwitchOut,
    openapi_extra={**audited("connector.writes"), PERMISSION_KEY: ADMIN_PERMISSION},
    responses=_ERRORS,
    dependencies=[ADMIN],
)
async def set_writes(
    ctx: Ctx,
    request: Request,
    name: Annotated[str, Path(description="The connector's name.")],
    body: SwitchIn,
) -> SwitchOut:
    """Turn writes through connector ``name`` on or off."""
    service = _service(ctx)
    audit = _Audit(request, name, new=body.enabled)
    _user(request, body.user)
    try:
        was = await service.set_enabled(name, body.enabled)
    except WriteDenied as err:
        raise _denied(err) from err
    audit.add(old=was)
    return SwitchOut(connector=name, enabled=body.enabled, was=was)
