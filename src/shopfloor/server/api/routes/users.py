"""Users and API tokens, for admins: ``/api/v1/users`` and ``/api/v1/tokens``.

A token's secret is in the answer of its creation only; the server keeps a digest. Every
change is audited (never with a password or a secret in it).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from shopfloor.server.api.audit_trail import audited, note
from shopfloor.server.api.auth import ADMIN, Require, auth_of
from shopfloor.server.api.schemas import ErrorEnvelope
from shopfloor.server.security import Principal

__all__ = ["router"]

router = APIRouter(prefix="/api/v1", tags=["users"], dependencies=[ADMIN])

_ERRORS: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorEnvelope, "description": "No such user or token."},
    409: {"model": ErrorEnvelope, "description": "The name is taken, or the last admin."},
    422: {"model": ErrorEnvelope, "description": "An invalid field (named)."},
}
_S = 1_000_000_000


class UserOut(BaseModel):
    """A user (never its password)."""

    name: str = Field(description="The user's name.")
    role: str = Field(description="viewer, operator, engineer or admin.")
    sites: list[str] = Field(description="ISA-95 path prefixes the user is limited to.")
    disabled: bool = Field(description="A disabled user cannot log in.")
    created_ns: int = Field(description="When it was created (UTC nanoseconds).")
    locked_until_ns: int | None = Field(description="End of a lockout after failed logins.")
    totp: bool = Field(False, description="The user logs in with a second factor (TOTP).")
    locale: str | None = Field(
        None, description="The user's dashboard language (`en`, `zh-CN`); null: the browser's."
    )


class UserIn(BaseModel):
    """A new user."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="1 to 64 letters, digits or _.@-.")
    password: str = Field(max_length=1024, description="At least the configured length.")
    role: str = Field("viewer", description="viewer, operator, engineer or admin.")
    sites: list[str] = Field(
        default_factory=list, description="ISA-95 path prefixes (empty: the whole plant)."
    )


class UserPatch(BaseModel):
    """A change of a user: only the fields given change."""

    model_config = ConfigDict(extra="forbid")

    role: str | None = Field(None, description="viewer, operator, engineer or admin.")
    disabled: bool | None = Field(None, description="Disable (ends its sessions) or enable.")
    sites: list[str] | None = Field(None, description="ISA-95 path prefixes.")


class PasswordSet(BaseModel):
    """A password set by an admin."""

    model_config = ConfigDict(extra="forbid")

    password: str = Field(max_length=1024, description="The new password.")


class TokenIn(BaseModel):
    """A new API token."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="What it is for (1 to 64 letters, digits or _.@-).")
    role: str = Field(
        "read",
        description="A role (viewer, operator, engineer, admin) or a narrower scope: read, "
        "operate, ingest.",
    )
    expires_in_s: float | None = Field(
        None, gt=0, description="Seconds until it expires (null: until revoked)."
    )
    user: str | None = Field(
        None,
        description="A user the token acts as (audited under that name, never with more "
        "than the user's role); null: it acts as `token:NAME`.",
    )


class TokenOut(BaseModel):
    """An API token (never its secret)."""

    id: str = Field(description="Its id (for DELETE).")
    name: str = Field(description="What it is for.")
    role: str = Field(description="Its role or scope.")
    owner: str = Field(description="Who created it.")
    created_ns: int = Field(description="When (UTC nanoseconds).")
    expires_ns: int | None = Field(description="When it expires (null: never).")
    revoked_ns: int | None = Field(description="When it was revoked (null: live).")
    user: str | None = Field(None, description="The user it acts as (null: itself).")


class TokenCreated(BaseModel):
    """A new token and its secret, shown this once."""

    token: TokenOut = Field(description="The token.")
    secret: str = Field(
        description="Send it as `Authorization: Bearer <secret>`. It is not shown again."
    )


Admin = Annotated[Principal | None, Depends(Require(None))]


@router.get("/users", summary="List users", response_model=list[UserOut])
async def list_users(request: Request) -> list[dict[str, object]]:
    """Every user."""
    return [u.public() for u in await auth_of(request).users()]


@router.post(
    "/users",
    summary="Create a user",
    status_code=201,
    response_model=UserOut,
    responses=_ERRORS,
    openapi_extra=audited("user.create"),
)
async def create_user(request: Request, body: UserIn) -> dict[str, object]:
    """Create a user with a password that meets the policy."""
    note(request, target=body.name, detail={"role": body.role, "sites": body.sites})
    user = await auth_of(request).add_user(
        body.name, body.password, role=body.role, sites=body.sites
    )
    return user.public()


@router.patch(
    "/users/{name}",
    summary="Change a user",
    response_model=UserOut,
    responses=_ERRORS,
    openapi_extra=audited("user.update"),
)
async def update_user(
    request: Request, name: Annotated[str, Path(max_length=64)], body: UserPatch
) -> dict[str, object]:
    """Change a user's role, sites or disabled flag (disabling ends its sessions)."""
    auth = auth_of(request)
    before = await auth.user(name)
    changes = body.model_dump(exclude_none=True)
    note(
        request,
        target=name,
        detail={"before": None if before is None else before.public(), "change": changes},
    )
    user = await auth.update_user(name, role=body.role, disabled=body.disabled, sites=body.sites)
    return user.public()


@router.put(
    "/users/{name}/password",
    summary="Set a user's password",
    status_code=204,
    responses=_ERRORS,
    openapi_extra=audited("user.password"),
)
async def set_password(
    request: Request,
    name: Annotated[str, Path(max_length=64)],
    body: PasswordSet,
    principal: Admin,
) -> Response:
    """Set a password; every session of the user ends (the admin's own one stays)."""
    note(request, target=name)
    keep = principal.session if principal is not None and principal.name == name else None
    await auth_of(request).set_password(name, body.password, keep_session=keep)
    return Response(status_code=204)


@router.delete(
    "/users/{name}/totp",
    summary="Remove a user's second factor",
    status_code=204,
    responses=_ERRORS,
    openapi_extra=audited("user.totp.remove"),
)
async def remove_totp(
    request: Request, name: Annotated[str, Path(max_length=64)], principal: Admin
) -> Response:
    """Remove the user's second factor (a lost phone): the next login needs only the
    password, and a setup again where a factor is required. Every session of the user
    ends (the admin's own one stays)."""
    keep = principal.session if principal is not None and principal.name == name else None
    had = await auth_of(request).remove_totp(name, keep_session=keep)
    note(request, target=name, detail={"had_totp": had})
    return Response(status_code=204)


@router.get("/tokens", summary="List API tokens", response_model=list[TokenOut])
async def list_tokens(request: Request) -> list[dict[str, object]]:
    """Every API token, revoked ones too (never their secrets)."""
    return [t.public() for t in await auth_of(request).tokens()]


@router.post(
    "/tokens",
    summary="Create an API token",
    status_code=201,
    response_model=TokenCreated,
    responses=_ERRORS,
    openapi_extra=audited("token.create"),
)
async def create_token(request: Request, body: TokenIn, principal: Admin) -> dict[str, object]:
    """A new token; its secret is in this answer only."""
    note(
        request,
        target=body.name,
        detail={"role": body.role, "user": body.user, "expires_in_s": body.expires_in_s},
    )
    auth = auth_of(request)
    expires = None if body.expires_in_s is None else auth.now() + int(body.expires_in_s * _S)
    owner = principal.name if principal is not None else ""
    token, secret = await auth.create_token(
        body.name, role=body.role, owner=owner, expires_ns=expires, user=body.user
    )
    note(request, target=f"{token.name} ({token.id})", detail={"token": token.public()})
    return {"token": token.public(), "secret": secret}


@router.delete(
    "/tokens/{token_id}",
    summary="Revoke an API token",
    response_model=TokenOut,
    responses=_ERRORS,
    openapi_extra=audited("token.revoke"),
)
async def revoke_token(
    request: Request, token_id: Annotated[str, Path(max_length=64)]
) -> dict[str, object]:
    """Revoke a token: it is refused from now on."""
    note(request, target=token_id)
    token = await auth_of(request).revoke_token(token_id)
    return token.public()
