"""Credentials for tests and tools that talk to a shopfloor API: one way for all of them.

Every API route needs a credential (deny by default). A test that builds an app gets an
API token for it with :func:`grant` and sends it on every request::

    app = create_app(...)
    client = httpx.AsyncClient(transport=..., headers=grant(app))

A test that starts a server process provisions its data folder first with
:func:`provision` (what ``shopfloor users add`` and ``shopfloor tokens create`` do), then
sends the token, or logs a browser in with the user's password.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shopfloor.model import now_ns
from shopfloor.server.security.passwords import hash_password
from shopfloor.server.security.store import SecurityStore

__all__ = [
    "SECURITY_FILE",
    "Provisioned",
    "act_as",
    "bearer",
    "grant",
    "log_in_page",
    "new_secret",
    "provision",
    "shared_secret_key",
]

SECURITY_FILE = "security.sqlite"
"""The security store in a server's data folder (the server's own constant's value)."""


def bearer(token: str) -> dict[str, str]:
    """The header that sends ``token``."""
    return {"Authorization": f"Bearer {token}"}


def grant(
    app: Any, *, role: str = "admin", name: str = "tests", user: str | None = None
) -> dict[str, str]:
    """A new API token with ``role`` (or scope) for ``app`` (built by ``create_app``, or a
    ``Server``'s), as the header to send.

    Args:
        app: the FastAPI app.
        role: the token's role or scope (and the user's role, if it is created).
        name: the token's name (a random suffix is added).
        user: act as this user (created with ``role`` and a random password if it does
            not exist): what the audit log and the alarm journal then name.

    It writes to the app's store from the calling thread: call it before the app serves
    requests (a fixture, the start of a test), not while it does. A bare app (a router
    under test without ``create_app``) is given an empty in-memory store first.
    """
    if getattr(app.state, "auth", None) is None:
        from shopfloor.server.api.auth import install_auth
        from shopfloor.server.security import Auth

        install_auth(app, Auth(None))
    store = app.state.auth.opened()
    now = now_ns()
    if user is not None and store.user(user) is None:
        store.add_user(
            user, hash_password(secrets.token_urlsafe(18)), role=role, sites=(), now_ns=now
        )
    _, secret = store.create_token(
        f"{name}-{secrets.token_hex(3)}",
        role=role,
        owner="tests",
        expires_ns=None,
        now_ns=now,
        user=user,
    )
    return bearer(secret)


def act_as(admin: Any, name: str, *, role: str = "operator") -> dict[str, str]:
    """Create user ``name`` (random password) and a token acting as it through a running
    server's API, with ``admin``, an ``httpx.Client`` holding an admin's token; the header
    that sends the new token (the journal and the audit log then name ``name``)."""
    made = admin.post(
        "/api/v1/users",
        json={"name": name, "password": secrets.token_urlsafe(18), "role": role},
    )
    if made.status_code not in (201, 409):
        raise RuntimeError(f"cannot create the user {name!r}: {made.text}")
    token = admin.post("/api/v1/tokens", json={"name": name, "role": role, "user": name})
    if token.status_code != 201:
        raise RuntimeError(f"cannot create a token for {name!r}: {token.text}")
    return bearer(token.json()["secret"])


@dataclass(frozen=True, slots=True)
class Provisioned:
    """What :func:`provision` created: a user with its password, and an API token."""

    user: str
    password: str
    token: str

    @property
    def headers(self) -> dict[str, str]:
        """The token as a header."""
        return bearer(self.token)


def new_secret() -> str:
    """A token secret to hand out before it is stored (see :func:`provision`'s ``secret``)."""
    return f"sft_{secrets.token_hex(6)}_{secrets.token_urlsafe(32)}"


def shared_secret_key(folder: Path) -> Path:
    """A secret key file in ``folder`` (made once, then reused) for the API servers of a
    shared historian, which must all use the same key and refuse to make their own
    (docs/scale-out.md): ``"security": {"secret_key_file": str(shared_secret_key(dir))}``."""
    key = folder / "secret.key"
    if not key.exists():
        folder.mkdir(parents=True, exist_ok=True)
        key.write_text(secrets.token_urlsafe(48) + "\n")
    return key


def provision(
    data_dir: Path,
    *,
    role: str = "admin",
    user: str = "tester",
    token_role: str | None = None,
    secret: str | None = None,
) -> Provisioned:
    """Create a user (random password) and an API token acting as it in a server's data
    folder, before the server starts (the server then creates no first ``admin``).

    Args:
        data_dir: the server's ``server.data_dir``.
        role: the user's role.
        user: the user's name.
        token_role: the token's role or scope (default: ``role``).
        secret: the token's secret, made beforehand with :func:`new_secret` (for a client
            that must be configured before the server starts); stored once.
    """
    store = SecurityStore(data_dir / SECURITY_FILE)
    try:
        password = secrets.token_urlsafe(18)
        if store.user(user) is None:
            store.add_user(user, hash_password(password), role=role, sites=(), now_ns=now_ns())
        else:
            store.set_password(user, hash_password(password), keep_session=None)
        known = secret is not None and store.token_for(secret, now_ns=now_ns()) is not None
        if not known:
            _, secret = store.create_token(
                f"{user}-{secrets.token_hex(3)}",
                role=token_role or role,
                owner="tests",
                expires_ns=None,
                now_ns=now_ns(),
                user=user,
                secret=secret,
            )
        assert secret is not None
    finally:
        store.close()
    return Provisioned(user, password, secret)


async def log_in_page(page: Any, base: str, user: Provisioned) -> None:
    """Log a Playwright ``page`` in to the server at ``base`` as ``user``: the login goes
    through the page's own request context, so it keeps the session and CSRF cookies."""
    answer = await page.request.post(
        f"{base}/api/v1/auth/login", data={"name": user.user, "password": user.password}
    )
    if not answer.ok:
        raise AssertionError(f"login as {user.user} failed: {answer.status} {await answer.text()}")
