"""Users and API tokens managed on a server's data folder directly (``shopfloor users`` and
``shopfloor tokens``): for the first admin, a forgotten password, automation.

Each function opens ``security.sqlite`` (SQLite lets the running server and this process
share it) and writes one entry to the audit log, as the API does, with the user
``cli:<login name>``; :func:`record` does that for other commands (``shopfloor backup``).
Given a :class:`SharedPlace` instead of a folder, it works on the shared PostgreSQL of a
scaled-out installation (``shopfloor users --config`` with ``historian.shared = true``),
where the API servers keep their users and audit log. Blocking: for the CLI, which owns no
event loop.
"""

from __future__ import annotations

import dataclasses
import getpass
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from shopfloor.config import ShopfloorConfig
from shopfloor.config.models import PostgresHistorianSection
from shopfloor.config.security import SecuritySection
from shopfloor.model import now_ns
from shopfloor.server.security.audit import AuditBackend, AuditEntry, AuditStore, Outcome
from shopfloor.server.security.passwords import check_password, hash_password
from shopfloor.server.security.store import (
    SecurityBackend,
    SecurityStore,
    TokenRecord,
    UserRecord,
)

__all__ = [
    "Place",
    "SharedPlace",
    "add_user",
    "create_token",
    "list_tokens",
    "list_users",
    "record",
    "revoke_token",
    "set_disabled",
    "set_password",
    "shared_place",
]

T = TypeVar("T")
SECURITY_FILE = "security.sqlite"
AUDIT_FILE = "audit.sqlite"


def _actor() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (OSError, KeyError):
        return "cli"


@dataclass(frozen=True, slots=True)
class SharedPlace:
    """The shared PostgreSQL's security schema (:mod:`.pg_tables`)."""

    dsn: str
    schema: str


Place = Path | SharedPlace
"""A server's data folder, or the shared PostgreSQL of scaled-out API servers."""


def shared_place(config: ShopfloorConfig) -> SharedPlace | None:
    """Where API servers with this configuration share their users, sessions, tokens, audit
    log and writes switches: the historian's database, in the sibling schema of
    :mod:`.pg_tables`. None unless the historian is PostgreSQL in shared mode (each
    server's data folder keeps them).

    Raises:
        ConfigError: the historian's password cannot be read.
    """
    from shopfloor.server.security.pg_tables import security_schema

    section = config.historian
    if not isinstance(section, PostgresHistorianSection) or not section.shared:
        return None
    return SharedPlace(section.connection_string(), security_schema(section.schema_name))


def _audit_store(place: Place) -> AuditBackend:
    if isinstance(place, SharedPlace):
        from shopfloor.server.security.pg_audit import PgAuditStore

        return PgAuditStore(place.dsn, place.schema)
    return AuditStore(place / AUDIT_FILE)


@contextmanager
def _store(data_dir: Place) -> Iterator[SecurityBackend]:
    if isinstance(data_dir, SharedPlace):
        from shopfloor.server.security.pg_store import PgSecurityStore

        store: SecurityBackend = PgSecurityStore(data_dir.dsn, data_dir.schema)
    else:
        store = SecurityStore(data_dir / SECURITY_FILE)
    try:
        yield store
    finally:
        store.close()


def record(
    data_dir: Place,
    *,
    action: str,
    target: str,
    outcome: Outcome,
    detail: dict[str, Any] | None = None,
) -> AuditEntry:
    """Append one entry by ``cli:<login name>`` to the data folder's audit log (safe while
    the server appends to it too: see :meth:`AuditStore.append`); the entry as stored.

    Raises:
        AuditError: it could not be stored.
    """
    entry = AuditEntry(
        ts_ns=now_ns(),
        user=_actor(),
        action=action,
        target=target,
        outcome=outcome,
        client="cli",
        detail=dict(detail or {}),
    )
    audit = _audit_store(data_dir)
    try:
        seq, digest = audit.append(entry)
    finally:
        audit.close()
    return dataclasses.replace(entry, seq=seq, hash=digest)


def _audited(data_dir: Place, action: str, target: str, fn: Callable[[], T], **detail: Any) -> T:
    """Run ``fn`` and audit it (accepted, or refused with the error)."""
    outcome, error = Outcome.OK, None
    try:
        return fn()
    except Exception as err:
        outcome, error = Outcome.REJECTED, str(err)
        raise
    finally:
        record(
            data_dir,
            action=action,
            target=target,
            outcome=outcome,
            detail={**detail, **({"error": error} if error else {})},
        )


def add_user(
    data_dir: Place,
    name: str,
    password: str,
    *,
    role: str,
    sites: Sequence[str] = (),
    settings: SecuritySection | None = None,
) -> UserRecord:
    """Create a user.

    Raises:
        PasswordRejected: the password does not meet the policy.
        SecurityError: the name is taken or invalid, the role unknown.
    """
    policy = settings or SecuritySection()

    def run() -> UserRecord:
        check_password(password, min_length=policy.min_password_length, user=name)
        with _store(data_dir) as store:
            return store.add_user(
                name, hash_password(password), role=role, sites=sites, now_ns=now_ns()
            )

    return _audited(data_dir, "user.create", name, run, role=role, sites=list(sites))


def set_password(
    data_dir: Place, name: str, password: str, *, settings: SecuritySection | None = None
) -> None:
    """Give a user a new password, end its sessions and lift a lockout.

    Raises:
        PasswordRejected: the password does not meet the policy.
        SecurityError: no such user.
    """
    policy = settings or SecuritySection()

    def run() -> None:
        check_password(password, min_length=policy.min_password_length, user=name)
        with _store(data_dir) as store:
            store.set_password(name, hash_password(password), keep_session=None)

    _audited(data_dir, "user.password", name, run)


def set_disabled(data_dir: Place, name: str, *, disabled: bool = True) -> UserRecord:
    """Disable (ending its sessions) or enable a user.

    Raises:
        SecurityError: no such user, or the last enabled admin.
    """

    def run() -> UserRecord:
        with _store(data_dir) as store:
            return store.update_user(name, disabled=disabled)

    return _audited(data_dir, "user.update", name, run, change={"disabled": disabled})


def list_users(data_dir: Place) -> list[UserRecord]:
    """Every user."""
    with _store(data_dir) as store:
        return store.users()


def create_token(
    data_dir: Place,
    name: str,
    *,
    role: str,
    user: str | None = None,
    expires_in_s: float | None = None,
) -> tuple[TokenRecord, str]:
    """A new API token and its secret (to be shown once).

    Raises:
        SecurityError: the name or role is invalid, the user unknown.
    """

    def run() -> tuple[TokenRecord, str]:
        now = now_ns()
        expires = None if expires_in_s is None else now + int(expires_in_s * 1e9)
        with _store(data_dir) as store:
            return store.create_token(
                name, role=role, owner=_actor(), expires_ns=expires, now_ns=now, user=user
            )

    return _audited(
        data_dir, "token.create", name, run, role=role, user=user, expires_in_s=expires_in_s
    )


def revoke_token(data_dir: Place, token_id: str) -> TokenRecord:
    """Revoke a token.

    Raises:
        SecurityError: no such token.
    """

    def run() -> TokenRecord:
        with _store(data_dir) as store:
            return store.revoke_token(token_id, now_ns=now_ns())

    return _audited(data_dir, "token.revoke", token_id, run)


def list_tokens(data_dir: Place) -> list[TokenRecord]:
    """Every API token, revoked ones too."""
    with _store(data_dir) as store:
        return store.tokens()
