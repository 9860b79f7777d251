"""The async façade of the security store: logins, sessions, API tokens, users.

One worker thread owns the store (house rule 4) and does the Argon2 hashing, which
takes tens of milliseconds on purpose: the event loop never waits on either. The store is
the SQLite file in the data folder, or, scaled out, the shared PostgreSQL
(:mod:`.pg_store`): :class:`Auth` only sees a :class:`~.store.SecurityBackend`. What it
keeps in memory is the per-address login throttle only (see :meth:`Auth._throttle`).
"""

from __future__ import annotations

import asyncio
import hmac
import secrets
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, TypeVar

from shopfloor.config.security import SecuritySection
from shopfloor.model import now_ns
from shopfloor.server.security.passwords import (
    check_password,
    dummy_hash,
    hash_password,
    needs_rehash,
    verify_password,
)
from shopfloor.server.security.roles import Permission, Role, permissions_of
from shopfloor.server.security.store import (
    SecurityBackend,
    SecurityError,
    SecurityStore,
    TokenRecord,
    UserRecord,
    digest,
)

__all__ = ["Auth", "LoginRefused", "Principal"]

T = TypeVar("T")
_S = 1_000_000_000
_MFA_ROLES = frozenset({Role.ADMIN, Role.ENGINEER})
"""Roles that must have a second factor when ``[security] mfa = "required"``."""
_TOTP_STEP_S = 30
_MAX_CLIENTS = 4096
"""Most client addresses whose recent login attempts are remembered (then it starts over)."""


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a request is authenticated as.

    Attributes:
        name: the user's name, or ``token:NAME`` for an API token.
        role: the user's role, or the token's role or scope.
        permissions: what the role or scope grants.
        sites: the ISA-95 path prefixes the user is limited to (empty: the whole plant).
        kind: ``session`` (a browser's cookie) or ``token`` (``Authorization: Bearer``).
        session: the session id (kind ``session`` only), to end it at logout.
        csrf: the CSRF token the session's unsafe requests must send (kind ``session``).
        mfa_pending: ``[security] mfa = "required"`` and the user has no second factor yet:
            no permission is granted until it is set up (``POST /api/v1/auth/totp``).
        locale: the user's chosen language (``zh-CN``), None when the browser's decides.
        token: the API token's id (kind ``token``), which the audit of a denial names.
    """

    name: str
    role: str
    permissions: frozenset[Permission]
    sites: tuple[str, ...] = ()
    kind: Literal["session", "token"] = "session"
    session: str | None = None
    csrf: str | None = None
    mfa_pending: bool = False
    locale: str | None = None
    token: str | None = None

    def may(self, permission: Permission) -> bool:
        """Whether the principal holds ``permission``."""
        return permission in self.permissions


class LoginRefused(Exception):  # noqa: N818 - a refusal, not a failure of the server
    """A login was refused: wrong name or password (401), locked out or too many
    attempts (429, with ``retry_after_s``)."""

    def __init__(self, status: int, message: str, *, retry_after_s: int = 0) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.retry_after_s = retry_after_s


class Auth:
    """Users, sessions and tokens of one server.

    Args:
        path: the SQLite file (``security.sqlite`` in the data folder); None keeps it in
            memory (an app built without a data folder, as in tests).
        settings: ``[security]``.
        secret_key: the key CSRF tokens are derived from (None: a random one for this
            process, which is what an in-memory store needs).
        clock: wall time in UTC nanoseconds (tests move it instead of sleeping).
        store: opens the store instead of the SQLite file at ``path`` (the shared
            PostgreSQL of a scaled-out installation); called on the worker thread.
    """

    def __init__(
        self,
        path: Path | None,
        *,
        settings: SecuritySection | None = None,
        secret_key: bytes | None = None,
        clock: Callable[[], int] = now_ns,
        store: Callable[[], SecurityBackend] | None = None,
    ) -> None:
        self.path = path
        self._open: Callable[[], SecurityBackend] = store or (lambda: SecurityStore(path))
        self.settings = settings or SecuritySection()
        self._key = secret_key or secrets.token_bytes(32)
        self._clock = clock
        self._store: SecurityBackend | None = None
        # In memory there is no disk to wait on: the work runs inline, and an app built
        # without a data folder owns no thread that somebody must remember to stop.
        self._worker = (
            None
            if path is None and store is None
            else ThreadPoolExecutor(1, thread_name_prefix="security")
        )
        self._attempts: dict[str, deque[int]] = {}
        self._closed = False

    async def start(self) -> None:
        """Open (or create) the store.

        Raises:
            SecurityError: it cannot be opened.
        """
        await self._run(self.opened)

    async def close(self) -> None:
        """Close the store and stop the worker. Idempotent."""
        if self._closed:
            return
        self._closed = True
        store, self._store = self._store, None
        if store is not None:
            await self._run(store.close)
        if self._worker is not None:
            self._worker.shutdown(wait=True)

    def opened(self) -> SecurityBackend:
        """The blocking store, opened on first use (call it on the worker thread).

        Raises:
            SecurityError: it is closed, or cannot be opened.
        """
        if self._closed:
            raise SecurityError(None, "the security store is closed", status=503)
        if self._store is None:
            self._store = self._open()
        return self._store

    async def _run(self, fn: Callable[[], T]) -> T:
        if self._worker is None:
            return fn()
        return await asyncio.get_running_loop().run_in_executor(self._worker, fn)

    def now(self) -> int:
        """The clock's time (UTC ns): what token expiry and session timeouts compare with."""
        return self._clock()

    # first start

    async def bootstrap_admin(self) -> str | None:
        """With no user at all, create ``admin`` with a generated password and return it
        (to be shown once); None when users exist."""

        def create() -> str | None:
            store = self.opened()
            if store.count_users():
                return None
            password = secrets.token_urlsafe(15)
            try:
                store.add_user(
                    "admin",
                    hash_password(password),
                    role=Role.ADMIN,
                    sites=(),
                    now_ns=self._clock(),
                )
            except SecurityError as err:
                if err.status == 409:  # another server sharing the store made it first
                    return None
                raise
            return password

        return await self._run(create)

    # principals

    def csrf_of(self, session: str) -> str:
        """The CSRF token of a session: an HMAC of its id under the secret key."""
        return hmac.new(self._key, b"csrf:" + session.encode(), "sha256").hexdigest()

    def _mfa_pending(self, user: UserRecord) -> bool:
        required = self.settings.mfa == "required" and user.role in _MFA_ROLES
        return required and not user.totp_enabled

    def _of_user(self, user: UserRecord, session: str) -> Principal:
        pending = self._mfa_pending(user)
        return Principal(
            name=user.name,
            role=user.role,
            permissions=frozenset() if pending else permissions_of(user.role),
            mfa_pending=pending,
            sites=user.sites,
            kind="session",
            session=session,
            csrf=self.csrf_of(session),
            locale=user.locale,
        )

    async def session_principal(self, session: str) -> Principal | None:
        """The principal of a live session (None: unknown, timed out, user disabled)."""
        s = self.settings

        def find() -> UserRecord | None:
            return self.opened().session_user(
                session,
                now_ns=self._clock(),
                idle_ns=int(s.session_idle_s * _S),
                absolute_ns=int(s.session_absolute_s * _S),
            )

        user = await self._run(find)
        return None if user is None else self._of_user(user, session)

    async def token_principal(self, secret: str) -> Principal | None:
        """The principal of a live API token (None: unknown, revoked or expired)."""

        def find() -> tuple[TokenRecord, UserRecord | None] | None:
            store = self.opened()
            token = store.token_for(secret, now_ns=self._clock())
            if token is None:
                return None
            return token, None if token.user is None else store.user(token.user)

        found = await self._run(find)
        if found is None:
            return None
        token, user = found
        if token.user is None:
            return Principal(
                name=f"token:{token.name}",
                role=token.role,
                permissions=permissions_of(token.role),
                kind="token",
                token=token.id,
            )
        if user is None or user.disabled:
            return None
        return Principal(
            name=user.name,
            role=user.role,
            permissions=permissions_of(token.role) & permissions_of(user.role),
            sites=user.sites,
            kind="token",
            locale=user.locale,
            token=token.id,
        )

    # logins

    def _throttle(self, client: str, now: int) -> None:
        """Refuse a client address past ``login_rate_per_minute``. Kept in this process's
        memory, also when the store is shared: behind a load balancer each API server
        counts the attempts it sees (so an address gets up to N times the rate); the
        per-user lockout, which is what stops guessing one account, is in the store."""
        window = 60 * _S
        attempts = self._attempts.get(client)
        if attempts is None:
            if len(self._attempts) >= _MAX_CLIENTS:
                self._attempts.clear()
            attempts = self._attempts[client] = deque()
        while attempts and now - attempts[0] > window:
            attempts.popleft()
        if len(attempts) >= self.settings.login_rate_per_minute:
            retry = max(1, int((attempts[0] + window - now) / _S) + 1)
            raise LoginRefused(
                429, f"too many login attempts from {client}: wait {retry} s", retry_after_s=retry
            )
        attempts.append(now)

    async def login(
        self, name: str, password: str, *, client: str, code: str | None = None
    ) -> tuple[Principal, str]:
        """Check a name and password and open a new session (a fresh id: never one the
        client brought, so a planted id is useless).

        Args:
            name: the user's name.
            password: the password.
            client: the client's address (for the rate limit).
            code: the current TOTP code, required when the user has a second factor.

        Returns:
            The principal and the new session's id.

        Raises:
            LoginRefused: 401 for a wrong name or password (the same answer for both), or
                a missing, wrong or already used code; 429 while locked out or past the
                per-address rate.
        """
        s = self.settings
        now = self._clock()
        self._throttle(client, now)

        def check() -> tuple[UserRecord, str]:
            store = self.opened()
            user = store.user(name) if isinstance(name, str) else None
            if user is not None and user.locked_until_ns > now:
                retry = max(1, int((user.locked_until_ns - now) / _S) + 1)
                raise LoginRefused(
                    429,
                    f"too many failed logins for this user: locked for {retry} s more",
                    retry_after_s=retry,
                )
            ok = verify_password(user.hash if user else dummy_hash(), password)
            second = ok and user is not None and self._totp_ok(store, user, code, now)
            if user is None or not ok or not second or user.disabled:
                if user is not None and not (ok and second):
                    until = store.record_failure(
                        name,
                        now_ns=now,
                        threshold=s.lockout_threshold,
                        base_ns=int(s.lockout_base_s * _S),
                        max_ns=int(s.lockout_max_s * _S),
                    )
                    if until:
                        retry = max(1, int((until - now) / _S))
                        raise LoginRefused(
                            429,
                            f"too many failed logins for this user: locked for {retry} s",
                            retry_after_s=retry,
                        )
                if ok and not second:
                    raise LoginRefused(401, "second factor: the code is missing, wrong or used")
                raise LoginRefused(401, "wrong name or password (or the user is disabled)")
            store.clear_failures(
                name, password_hash=hash_password(password) if needs_rehash(user.hash) else None
            )
            return user, store.create_session(name, now_ns=now)

        user, session = await self._run(check)
        return self._of_user(user, session), session

    def _totp_ok(
        self, store: SecurityBackend, user: UserRecord, code: str | None, now: int
    ) -> bool:
        """Whether ``code`` is the user's current TOTP code, never used before (always
        True for a user without a second factor). Marks its time step used."""
        if not user.totp_enabled:
            return True
        secret = store.totp_secret(user.name)
        step = _matching_step(secret, code, now)
        return step is not None and store.use_totp_step(user.name, step)

    async def totp_begin(self, name: str) -> tuple[str, str]:
        """Give ``name`` a new (pending) TOTP secret; the secret and its ``otpauth://`` URI
        for an authenticator app. The second factor it had, if any, is replaced once
        :meth:`totp_confirm` accepts a code of the new one."""
        import pyotp

        secret = pyotp.random_base32()

        def store_pending() -> None:
            store = self.opened()
            user = store.user(name)
            if user is None:
                raise SecurityError("name", f"no user is called {name!r}", status=404)
            if not user.totp_enabled:  # an enabled factor stays until the new one works
                store.set_totp(name, secret, enabled=False)
            else:
                store.set_totp_pending(name, secret)

        await self._run(store_pending)
        uri = pyotp.TOTP(secret).provisioning_uri(name=name, issuer_name="shopfloor")
        return secret, uri

    async def totp_confirm(self, name: str, code: str) -> bool:
        """Turn the pending secret on when ``code`` is its current code; False otherwise."""

        def confirm() -> bool:
            store = self.opened()
            secret = store.totp_pending(name) or store.totp_secret(name)
            step = _matching_step(secret, code, self._clock())
            if step is None:
                return False
            store.set_totp(name, secret, enabled=True)  # and forgets the pending one
            return store.use_totp_step(name, step)

        return await self._run(confirm)

    async def remove_totp(self, name: str, *, keep_session: str | None = None) -> bool:
        """Remove ``name``'s second factor and end its sessions but ``keep_session`` (the
        session of a user removing their own); whether it had one.

        Raises:
            SecurityError: no such user (404).
        """
        keep = None if keep_session is None else digest(keep_session)

        return await self._run(lambda: self.opened().remove_totp(name, keep_session=keep))

    async def check_totp(self, name: str, code: str) -> bool:
        """Whether ``code`` is the current code of ``name``'s enabled second factor, never
        used before (it is then used up, as at a login)."""

        def check() -> bool:
            store = self.opened()
            user = store.user(name)
            if user is None or not user.totp_enabled:
                return False
            return self._totp_ok(store, user, code, self._clock())

        return await self._run(check)

    async def logout(self, session: str) -> str | None:
        """End a session; its user's name (None: it was not open)."""
        return await self._run(lambda: self.opened().end_session(session))

    # users

    async def users(self) -> list[UserRecord]:
        """Every user."""
        return await self._run(lambda: self.opened().users())

    async def user(self, name: str) -> UserRecord | None:
        """One user."""
        return await self._run(lambda: self.opened().user(name))

    async def add_user(
        self, name: str, password: str, *, role: str, sites: Sequence[str] = ()
    ) -> UserRecord:
        """Create a user with a password that meets the policy.

        Raises:
            PasswordRejected: the password does not.
            SecurityError: the name, role or sites are invalid, or the name is taken.
        """
        check_password(password, min_length=self.settings.min_password_length, user=name)
        hashed = await self._run(lambda: hash_password(password))
        return await self._run(
            lambda: self.opened().add_user(
                name, hashed, role=role, sites=sites, now_ns=self._clock()
            )
        )

    async def update_user(
        self,
        name: str,
        *,
        role: str | None = None,
        disabled: bool | None = None,
        sites: Sequence[str] | None = None,
    ) -> UserRecord:
        """Change a user (see :meth:`SecurityStore.update_user`)."""
        return await self._run(
            lambda: self.opened().update_user(name, role=role, disabled=disabled, sites=sites)
        )

    async def set_locale(self, name: str, locale: str | None) -> UserRecord:
        """Store a user's language (see :meth:`SecurityStore.set_locale`)."""
        return await self._run(lambda: self.opened().set_locale(name, locale))

    async def set_password(self, name: str, password: str, *, keep_session: str | None) -> None:
        """Give a user a new password; every other session of the user ends.

        Raises:
            PasswordRejected: the password does not meet the policy.
            SecurityError: no such user.
        """
        check_password(password, min_length=self.settings.min_password_length, user=name)
        keep = None if keep_session is None else digest(keep_session)
        hashed = await self._run(lambda: hash_password(password))
        await self._run(lambda: self.opened().set_password(name, hashed, keep_session=keep))

    async def verify(self, name: str, password: str) -> bool:
        """Whether ``password`` is ``name``'s (for a password change that names the old)."""
        user = await self.user(name)
        hashed = user.hash if user else dummy_hash()
        return await self._run(lambda: verify_password(hashed, password)) and user is not None

    # API tokens

    async def create_token(
        self,
        name: str,
        *,
        role: str,
        owner: str,
        expires_ns: int | None,
        user: str | None = None,
    ) -> tuple[TokenRecord, str]:
        """A new API token and its secret (to be shown once); with ``user``, it acts as
        that user (see :class:`~.store.TokenRecord`)."""
        return await self._run(
            lambda: self.opened().create_token(
                name,
                role=role,
                owner=owner,
                expires_ns=expires_ns,
                now_ns=self._clock(),
                user=user,
            )
        )

    async def tokens(self) -> list[TokenRecord]:
        """Every API token, revoked ones too."""
        return await self._run(lambda: self.opened().tokens())

    async def revoke_token(self, token_id: str) -> TokenRecord:
        """Revoke a token: it is refused from now on."""
        return await self._run(lambda: self.opened().revoke_token(token_id, now_ns=self._clock()))


def _matching_step(secret: str | None, code: str | None, now_ns: int) -> int | None:
    """The 30 s time step (now, or one either side for clock drift) whose TOTP code is
    ``code``; None when none is."""
    if not secret or not code or not code.strip().isdigit():
        return None
    import pyotp

    totp = pyotp.TOTP(secret)
    now_s = now_ns // _S
    for offset in (0, -1, 1):
        at = now_s + offset * _TOTP_STEP_S
        if hmac.compare_digest(totp.at(at), code.strip()):
            return at // _TOTP_STEP_S
    return None
