"""Logging in and out: ``POST /api/v1/auth/login``, ``POST /api/v1/auth/logout``,
``GET /api/v1/auth/me``, ``PATCH /api/v1/auth/me`` (one's own language) and
``POST /api/v1/auth/password`` (one's own password).

A login answers with two cookies: ``shopfloor_session`` (the session id: ``HttpOnly``,
``SameSite=Strict``, ``Secure`` over HTTPS) and ``shopfloor_csrf`` (readable by the page,
which sends it back as ``X-CSRF-Token`` on every change). Each login makes a new session
id and ends the one the browser brought, so a session id planted before the login is
worth nothing after it. Logins, refusals, lockouts and logouts are audited.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from shopfloor.server.api.auth import (
    AUTHENTICATED,
    CSRF_COOKIE,
    PUBLIC,
    SESSION,
    SESSION_COOKIE,
    Require,
    auth_of,
)
from shopfloor.server.api.denial_audit import SELF_AUDITED_KEY
from shopfloor.server.api.errors import ApiError
from shopfloor.server.api.schemas import ErrorEnvelope
from shopfloor.server.security import LoginRefused, Outcome, Principal, SecurityError
from shopfloor.server.security.store import LOCALES, check_locale

__all__ = ["MeOut", "record", "router"]

router = APIRouter(prefix="/api/v1/auth", tags=["auth"])

_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorEnvelope, "description": "Wrong name or password, or not logged in."},
    429: {
        "model": ErrorEnvelope,
        "description": "Locked out after failed logins, or too many attempts from this "
        "address (`Retry-After`).",
    },
    503: {
        "model": ErrorEnvelope,
        "description": "The security store or the audit log is unavailable (`message` "
        "names it); try again after `Retry-After` seconds.",
    },
}


class LoginIn(BaseModel):
    """A name and a password."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=64, description="The user's name.")
    password: str = Field(min_length=1, max_length=1024, description="The user's password.")
    code: str | None = Field(
        None,
        max_length=10,
        description="The current code of the user's authenticator app (TOTP), if the user "
        "has a second factor; each code is accepted once.",
    )


class MeOut(BaseModel):
    """Who the request is authenticated as."""

    name: str = Field(description="The user's name, or `token:NAME` for an API token.")
    role: str = Field(description="viewer, operator, engineer or admin (or a token's scope).")
    permissions: list[str] = Field(description="What the role grants: read, operate, ...")
    sites: list[str] = Field(description="ISA-95 path prefixes the user is limited to.")
    kind: str = Field(description="`session` (logged in) or `token` (API token).")
    csrf: str | None = Field(
        description="The session's CSRF token: send it as `X-CSRF-Token` with every "
        "POST, PUT, PATCH and DELETE (null for an API token, which needs none)."
    )
    mfa_pending: bool = Field(
        False,
        description="A second factor is required for this role and not set up yet: "
        "nothing but setting it up is allowed.",
    )
    locale: str | None = Field(
        None,
        description="The user's language for the dashboard (`en`, `zh-CN`); null: the "
        "browser's (cookie of the language menu, then `Accept-Language`).",
    )


class MeIn(BaseModel):
    """A change of one's own settings."""

    model_config = ConfigDict(extra="forbid")

    locale: str | None = Field(
        description=f"The dashboard's language for this user: one of {', '.join(LOCALES)}, "
        "or null to follow the browser.",
    )


class TotpOut(BaseModel):
    """A new second factor to enter into an authenticator app."""

    secret: str = Field(description="The TOTP secret (base32), shown this once.")
    uri: str = Field(description="The same as an `otpauth://` URI (for a QR code).")


class TotpConfirm(BaseModel):
    """The first code of a new second factor."""

    model_config = ConfigDict(extra="forbid")

    code: str = Field(min_length=6, max_length=10, description="The app's current code.")


class TotpRemove(BaseModel):
    """Proof that it is the user who removes their own second factor."""

    model_config = ConfigDict(extra="forbid")

    password: str = Field(min_length=1, max_length=1024, description="The user's password.")
    code: str = Field(min_length=6, max_length=10, description="The app's current code.")


class PasswordIn(BaseModel):
    """A change of one's own password."""

    model_config = ConfigDict(extra="forbid")

    current: str = Field(min_length=1, max_length=1024, description="The password now.")
    new: str = Field(min_length=1, max_length=1024, description="The new password.")


def _me(p: Principal) -> MeOut:
    return MeOut(
        name=p.name,
        role=p.role,
        permissions=sorted(p.permissions),
        sites=list(p.sites),
        kind=p.kind,
        csrf=p.csrf,
        mfa_pending=p.mfa_pending,
        locale=p.locale,
    )


async def record(
    request: Request,
    *,
    user: str,
    action: str,
    outcome: Outcome,
    target: str = "",
    detail: dict[str, Any] | None = None,
) -> None:
    """Write one audit entry for a security event (no-op without an audit log); a refusal
    of the request is then not entered again as ``access.denied``."""
    log = request.app.state.shopfloor.audit
    if log is None:
        return
    request.scope.setdefault("state", {})[SELF_AUDITED_KEY] = True
    await log.record(
        user=user,
        action=action,
        target=target or user,
        outcome=outcome,
        client=request.client.host if request.client else "",
        detail=detail or {},
    )


async def _record_refused(request: Request, name: str, err: LoginRefused) -> None:
    """Audit a refused login. A wrong password (401) is one entry each: the per-address
    throttle bounds how many. A 429 (the address past its rate, or the user locked out)
    costs the sender nothing, so those are coalesced per address (and user, for a
    lockout): the first entered at once, the repeats counted into one summary per window.
    """
    detail = {"status": err.status, "reason": err.message}
    if err.status != 429:
        await record(
            request, user=name, action="auth.login", outcome=Outcome.REJECTED, detail=detail
        )
        return
    log = request.app.state.shopfloor.audit
    if log is None:
        return
    request.scope.setdefault("state", {})[SELF_AUDITED_KEY] = True
    locked = "locked" in err.message
    address = request.client.host if request.client else ""
    await log.refused(
        (address, name) if locked else (address,),
        action="auth.lockout" if locked else "auth.login",
        user=name,
        target=name,
        client=address,
        detail=detail,
        base={"status": 429, "reason": "locked out" if locked else "too many attempts"},
    )


def _client(request: Request) -> str:
    return request.client.host if request.client else "unknown"


@router.post(
    "/login",
    summary="Log in",
    description="Check a name and password; answer with a new session cookie and the "
    "session's CSRF token.",
    response_model=MeOut,
    responses=_ERRORS,
    dependencies=[PUBLIC],
)
async def login(request: Request, response: Response, body: LoginIn) -> MeOut:
    """Open a session (ending the one the browser brought, if any)."""
    auth = auth_of(request)
    old = request.cookies.get(SESSION_COOKIE)
    try:
        principal, session = await auth.login(
            body.name, body.password, client=_client(request), code=body.code
        )
    except LoginRefused as err:
        await _record_refused(request, body.name, err)
        headers = {"Retry-After": str(err.retry_after_s)} if err.retry_after_s else None
        code = "too_many_requests" if err.status == 429 else "unauthorized"
        raise ApiError(err.status, code, None, err.message, headers=headers) from err
    if old:
        await auth.logout(old)
    await record(request, user=principal.name, action="auth.login", outcome=Outcome.OK)
    secure = request.url.scheme == "https"
    max_age = int(auth.settings.session_absolute_s)
    response.set_cookie(
        SESSION_COOKIE,
        session,
        max_age=max_age,
        httponly=True,
        samesite="strict",
        secure=secure,
        path="/",
    )
    response.set_cookie(
        CSRF_COOKIE,
        principal.csrf or "",
        max_age=max_age,
        httponly=False,
        samesite="strict",
        secure=secure,
        path="/",
    )
    return _me(principal)


@router.post(
    "/logout",
    summary="Log out",
    description="End this browser's session (an API token is not affected: revoke it).",
    status_code=204,
    responses=_ERRORS,
    dependencies=[AUTHENTICATED],
)
async def logout(
    request: Request,
    principal: Annotated[Principal | None, Depends(Require(None))],
) -> Response:
    """End the session and clear its cookies."""
    answer = Response(status_code=204)
    if principal is not None and principal.session is not None:
        await auth_of(request).logout(principal.session)
        await record(request, user=principal.name, action="auth.logout", outcome=Outcome.OK)
    answer.delete_cookie(SESSION_COOKIE, path="/")
    answer.delete_cookie(CSRF_COOKIE, path="/")
    return answer


@router.get(
    "/me",
    summary="Who am I",
    description="The user (or API token) the request is authenticated as, with its role, "
    "permissions, sites and the session's CSRF token.",
    response_model=MeOut,
    responses=_ERRORS,
    dependencies=[AUTHENTICATED],
)
async def me(principal: Annotated[Principal | None, Depends(Require(None))]) -> MeOut:
    """Describe the principal."""
    assert principal is not None  # Require(None) refuses anonymous requests
    return _me(principal)


@router.patch(
    "/me",
    summary="Change my settings",
    description="Set the logged-in user's language: the server renders the dashboard in it "
    "(after `?lang=`, before the language cookie and `Accept-Language`). Audited.",
    response_model=MeOut,
    responses={**_ERRORS, 422: {"model": ErrorEnvelope}},
    dependencies=[AUTHENTICATED],
)
async def change_me(
    request: Request,
    body: MeIn,
    principal: Annotated[Principal | None, Depends(Require(None))],
) -> MeOut:
    """Store the user's language (an API token acting as a user changes that user's)."""
    assert principal is not None
    auth = auth_of(request)
    user = None if principal.name.startswith("token:") else await auth.user(principal.name)
    if user is None:
        raise ApiError(403, "forbidden", None, "only a user has settings, not an API token")
    detail = {"before": user.locale, "locale": body.locale}
    try:
        check_locale(body.locale)
    except SecurityError:
        await record(
            request,
            user=principal.name,
            action="user.locale",
            outcome=Outcome.REJECTED,
            detail=detail,
        )
        raise
    await auth.set_locale(principal.name, body.locale)
    await record(
        request, user=principal.name, action="user.locale", outcome=Outcome.OK, detail=detail
    )
    return _me(replace(principal, locale=body.locale))


@router.post(
    "/password",
    summary="Change my password",
    description="Give the current password and a new one; every other session of the user "
    "ends (this one stays).",
    status_code=204,
    responses={**_ERRORS, 422: {"model": ErrorEnvelope}},
    dependencies=[SESSION],
)
async def change_password(
    request: Request,
    body: PasswordIn,
    principal: Annotated[Principal | None, Depends(Require(None))],
) -> Response:
    """Check the current password, store the new one, end the other sessions."""
    assert principal is not None
    auth = auth_of(request)
    if not await auth.verify(principal.name, body.current):
        await record(request, user=principal.name, action="user.password", outcome=Outcome.REJECTED)
        raise ApiError(403, "forbidden", "current", "current: not the user's password")
    await auth.set_password(principal.name, body.new, keep_session=principal.session)
    await record(request, user=principal.name, action="user.password", outcome=Outcome.OK)
    return Response(status_code=204)


@router.post(
    "/totp",
    summary="Set up a second factor",
    description="A new TOTP secret for the logged-in user's authenticator app; it takes "
    "effect once `POST /api/v1/auth/totp/confirm` accepts a code of it.",
    response_model=TotpOut,
    responses=_ERRORS,
    dependencies=[SESSION],
)
async def totp_begin(
    request: Request, principal: Annotated[Principal | None, Depends(Require(None))]
) -> TotpOut:
    """Make a pending secret."""
    assert principal is not None
    secret, uri = await auth_of(request).totp_begin(principal.name)
    await record(request, user=principal.name, action="user.totp.begin", outcome=Outcome.OK)
    return TotpOut(secret=secret, uri=uri)


@router.post(
    "/totp/confirm",
    summary="Confirm a second factor",
    description="Turn the pending second factor on with its current code; from now on "
    "each login needs a code.",
    status_code=204,
    responses={**_ERRORS, 403: {"model": ErrorEnvelope, "description": "A wrong code."}},
    dependencies=[SESSION],
)
async def totp_confirm(
    request: Request,
    body: TotpConfirm,
    principal: Annotated[Principal | None, Depends(Require(None))],
) -> Response:
    """Check the code; enable the factor."""
    assert principal is not None
    ok = await auth_of(request).totp_confirm(principal.name, body.code)
    outcome = Outcome.OK if ok else Outcome.REJECTED
    await record(request, user=principal.name, action="user.totp", outcome=outcome)
    if not ok:
        raise ApiError(403, "forbidden", "code", "code: not the current code of the new secret")
    return Response(status_code=204)


@router.delete(
    "/totp",
    summary="Remove my second factor",
    description="Turn the logged-in user's second factor off, with the password and a "
    "current code; every other session of the user ends. Audited. (An admin removes "
    "another user's with `DELETE /api/v1/users/{name}/totp`.)",
    status_code=204,
    responses={
        **_ERRORS,
        403: {"model": ErrorEnvelope, "description": "A wrong password or code."},
        409: {"model": ErrorEnvelope, "description": "The user has no second factor."},
    },
    dependencies=[SESSION],
)
async def totp_remove(
    request: Request,
    body: TotpRemove,
    principal: Annotated[Principal | None, Depends(Require(None))],
) -> Response:
    """Check the password and the code; remove the factor."""
    assert principal is not None
    auth = auth_of(request)
    user = await auth.user(principal.name)
    if user is None or not user.totp_enabled:
        raise ApiError(409, "conflict", None, f"{principal.name} has no second factor")
    field = None
    if not await auth.verify(principal.name, body.password):
        field = "password"
    elif not await auth.check_totp(principal.name, body.code):
        field = "code"
    if field is not None:
        await record(
            request,
            user=principal.name,
            action="user.totp.remove",
            outcome=Outcome.REJECTED,
            detail={"field": field},
        )
        raise ApiError(403, "forbidden", field, f"{field}: wrong (or already used)")
    await auth.remove_totp(principal.name, keep_session=principal.session)
    await record(request, user=principal.name, action="user.totp.remove", outcome=Outcome.OK)
    return Response(status_code=204)
