"""Users, browser sessions and API tokens in one SQLite file (``security.sqlite``), or in
the shared PostgreSQL of a scaled-out installation (:mod:`.pg_store`).

Nothing secret is stored as given: passwords as Argon2id hashes, session ids and API token
secrets as SHA-256 digests (both are 256-bit random values, so a fast hash is enough: the
file alone lets nobody log in). Blocking: one thread only; :class:`~.service.Auth` runs it
on its own worker thread.

:class:`SecurityBackend` holds the rules (lockout, last admin, token expiry, replayed TOTP
codes) once, over a small SQL interface (:meth:`~SecurityBackend._run`,
:meth:`~SecurityBackend._transaction`) that SQLite and PostgreSQL each implement: the
rules must not differ between a single box and a scaled-out one. The SQL is written once
in the dialect both speak (``?`` placeholders, translated for psycopg; ``"user"`` quoted,
a reserved word in PostgreSQL; ``ON CONFLICT``).
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
import sqlite3
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from shopfloor.errors import ShopfloorError
from shopfloor.runtime.durable_sqlite import open_durable
from shopfloor.server.security.roles import SCOPE_PERMISSIONS, Role

__all__ = [
    "LOCALES",
    "SecurityBackend",
    "SecurityError",
    "SecurityStore",
    "TokenRecord",
    "UserRecord",
    "check_locale",
    "check_name",
    "digest",
    "store_failure",
]

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS users ("
    " name TEXT PRIMARY KEY, hash TEXT NOT NULL, role TEXT NOT NULL, sites TEXT NOT NULL,"
    " disabled INTEGER NOT NULL DEFAULT 0, created_ns INTEGER NOT NULL,"
    " failures INTEGER NOT NULL DEFAULT 0, lockouts INTEGER NOT NULL DEFAULT 0,"
    " locked_until_ns INTEGER NOT NULL DEFAULT 0, totp_secret TEXT,"
    " totp_enabled INTEGER NOT NULL DEFAULT 0, totp_step INTEGER NOT NULL DEFAULT 0,"
    " locale TEXT, totp_pending TEXT)",
    "CREATE TABLE IF NOT EXISTS sessions ("
    " key TEXT PRIMARY KEY, user TEXT NOT NULL, created_ns INTEGER NOT NULL,"
    " seen_ns INTEGER NOT NULL)",
    "CREATE INDEX IF NOT EXISTS sessions_user ON sessions (user)",
    "CREATE TABLE IF NOT EXISTS tokens ("
    " id TEXT PRIMARY KEY, name TEXT NOT NULL, key TEXT NOT NULL UNIQUE, role TEXT NOT NULL,"
    " owner TEXT NOT NULL, created_ns INTEGER NOT NULL, expires_ns INTEGER,"
    " revoked_ns INTEGER, user TEXT)",
)
_ADDED_COLUMNS = (("users", "locale", "TEXT"), ("users", "totp_pending", "TEXT"))
"""Columns added after the first release: a file made before them gets them on opening."""
LOCALES = ("en", "zh-CN")
"""The languages a user may choose (the dashboard's catalogues; a test keeps them equal)."""
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}")
TOKEN_PREFIX = "sft_"
"""API token secrets start with this, so a leaked one is easy to recognise (and grep for)."""
_SESSION_TOUCH_NS = 30 * 1_000_000_000
"""A session's last use is written at most this often (not on every request)."""


class SecurityError(ShopfloorError):
    """A user or token operation was refused; ``field`` names the input at fault.

    Args:
        field: the field at fault (``name``, ``role``, ``sites``, ``password``).
        message: a sentence for people.
        status: the HTTP status the API answers with: 400-class for a refusal, 503 when
            the store itself failed (:func:`store_failure`).
    """

    def __init__(self, field: str | None, message: str, *, status: int = 422) -> None:
        super().__init__(message)
        self.field = field
        self.message = message
        self.status = status


def store_failure(where: str, err: Exception, *, conflict: bool = False) -> SecurityError:
    """The error of a statement the store could not run: 409 when it broke a constraint
    (a concurrent write got there first: the caller's request conflicts), else 503: the
    store is unavailable (a lost database, a full or damaged disk), nothing was refused."""
    return SecurityError(None, f"{where}: {err}", status=409 if conflict else 503)


def digest(secret: str) -> str:
    """The SHA-256 hex digest a session id or token secret is stored as."""
    return hashlib.sha256(secret.encode()).hexdigest()


def check_name(name: str, what: str = "name") -> str:
    """``name`` if it is a valid user or token name (letters, digits, ``_.@-``, ≤ 64).

    Raises:
        SecurityError: it is not.
    """
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise SecurityError(
            what, f"{what}: 1 to 64 letters, digits or _.@- (starting with a letter or digit)"
        )
    return name


def check_locale(locale: str | None) -> str | None:
    """``locale`` if it is one of :data:`LOCALES` (None: no choice, the browser's).

    Raises:
        SecurityError: it is not.
    """
    if locale is not None and locale not in LOCALES:
        raise SecurityError(
            "locale", f"locale: one of {', '.join(LOCALES)} or null, not {locale!r}"
        )
    return locale


def check_role(role: str, *, scopes: bool = False) -> str:
    """``role`` if it is a role (or, with ``scopes``, a token scope).

    Raises:
        SecurityError: it is neither.
    """
    known = [r.value for r in Role] + (list(SCOPE_PERMISSIONS) if scopes else [])
    if role not in known:
        raise SecurityError("role", f"role: one of {', '.join(known)}, not {role!r}")
    return role


def check_sites(sites: Sequence[str]) -> tuple[str, ...]:
    """Site/area path prefixes, stripped of slashes at the ends.

    Raises:
        SecurityError: one is empty or not a string.
    """
    out = []
    for i, site in enumerate(sites):
        if not isinstance(site, str) or not site.strip("/ "):
            raise SecurityError(f"sites.{i}", f"sites.{i}: a non-empty ISA-95 path prefix")
        out.append(site.strip("/ "))
    return tuple(out)


@dataclass(frozen=True, slots=True)
class UserRecord:
    """A user as stored (without its hash in :meth:`public`)."""

    name: str
    hash: str
    role: str
    sites: tuple[str, ...]
    disabled: bool
    created_ns: int
    failures: int
    lockouts: int
    locked_until_ns: int
    totp_enabled: bool = False
    locale: str | None = None

    def public(self) -> dict[str, object]:
        """What the users API shows: never the hash nor the second factor's secret."""
        return {
            "name": self.name,
            "role": self.role,
            "sites": list(self.sites),
            "disabled": self.disabled,
            "created_ns": self.created_ns,
            "locked_until_ns": self.locked_until_ns or None,
            "totp": self.totp_enabled,
            "locale": self.locale,
        }


@dataclass(frozen=True, slots=True)
class TokenRecord:
    """An API token as stored (its secret only as a digest). A token of a ``user`` acts as
    that user, with no more than the user's role allows; a token without one acts as
    ``token:NAME`` with its own role or scope."""

    id: str
    name: str
    role: str
    owner: str
    created_ns: int
    expires_ns: int | None
    revoked_ns: int | None
    user: str | None = None

    def public(self) -> dict[str, object]:
        """What the tokens API shows: never the secret."""
        return {
            "id": self.id,
            "name": self.name,
            "role": self.role,
            "owner": self.owner,
            "created_ns": self.created_ns,
            "expires_ns": self.expires_ns,
            "revoked_ns": self.revoked_ns,
            "user": self.user,
        }


_USER_COLUMNS = (
    "name, hash, role, sites, disabled, created_ns, failures, lockouts, locked_until_ns,"
    " totp_enabled, locale"
)
_TOKEN_COLUMNS = 'id, name, role, owner, created_ns, expires_ns, revoked_ns, "user"'


def _user(row: tuple[object, ...]) -> UserRecord:
    return UserRecord(
        name=str(row[0]),
        hash=str(row[1]),
        role=str(row[2]),
        sites=tuple(json.loads(str(row[3]))),
        disabled=bool(row[4]),
        created_ns=int(row[5]),  # type: ignore[call-overload]
        failures=int(row[6]),  # type: ignore[call-overload]
        lockouts=int(row[7]),  # type: ignore[call-overload]
        locked_until_ns=int(row[8]),  # type: ignore[call-overload]
        totp_enabled=bool(row[9]),
        locale=None if row[10] is None else str(row[10]),
    )


def _token(row: tuple[object, ...]) -> TokenRecord:
    return TokenRecord(
        id=str(row[0]),
        name=str(row[1]),
        role=str(row[2]),
        owner=str(row[3]),
        created_ns=int(row[4]),  # type: ignore[call-overload]
        expires_ns=None if row[5] is None else int(row[5]),  # type: ignore[call-overload]
        revoked_ns=None if row[6] is None else int(row[6]),  # type: ignore[call-overload]
        user=None if row[7] is None else str(row[7]),
    )


class Rows(Protocol):
    """What :meth:`SecurityBackend._run` returns: a DB-API cursor of either driver."""

    @property
    def rowcount(self) -> int: ...

    def fetchone(self) -> Any: ...

    def __iter__(self) -> Iterator[Any]: ...


class SecurityBackend(ABC):
    """Users, sessions and tokens over some SQL database (blocking: one thread only).

    Subclasses give :meth:`_run` (one statement, errors as :class:`SecurityError`),
    :meth:`_transaction` and :meth:`close`; ``_for_update`` is appended to the reads of a
    read-modify-write, so that two processes sharing the database serialise on the row.
    """

    where: str = "security store"
    """Named in errors (the file, or the database schema)."""
    _for_update: str = ""

    @abstractmethod
    def _run(self, sql: str, params: Sequence[object] = ()) -> Rows:
        """Run one statement (``?`` placeholders).

        Raises:
            SecurityError: the database failed.
        """

    def _transaction(self) -> AbstractContextManager[object]:
        """The statements run inside are one transaction (a no-op where there is one writer)."""
        return nullcontext()

    @abstractmethod
    def close(self) -> None:
        """Close the connection."""

    # users

    def count_users(self) -> int:
        """How many users there are (disabled ones included)."""
        return int(self._run("SELECT count(*) FROM users").fetchone()[0])

    def active_admins(self) -> list[str]:
        """The names of the enabled admins."""
        rows = self._run("SELECT name FROM users WHERE role = 'admin' AND disabled = 0")
        return [r[0] for r in rows]

    def add_user(
        self, name: str, password_hash: str, *, role: str, sites: Sequence[str], now_ns: int
    ) -> UserRecord:
        """Create a user.

        Raises:
            SecurityError: the name is invalid or taken (409), the role unknown.
        """
        check_name(name)
        check_role(role)
        clean = check_sites(sites)
        added = self._run(
            "INSERT INTO users (name, hash, role, sites, created_ns) VALUES (?, ?, ?, ?, ?)"
            " ON CONFLICT (name) DO NOTHING",
            (name, password_hash, role, json.dumps(list(clean)), now_ns),
        )
        if added.rowcount != 1:
            raise SecurityError("name", f"name: a user {name!r} exists", status=409)
        user = self.user(name)
        assert user is not None
        return user

    def user(self, name: str) -> UserRecord | None:
        """The user called ``name``, if any."""
        row = self._run(f"SELECT {_USER_COLUMNS} FROM users WHERE name = ?", (name,)).fetchone()
        return None if row is None else _user(row)

    def users(self) -> list[UserRecord]:
        """Every user, by name."""
        return [_user(r) for r in self._run(f"SELECT {_USER_COLUMNS} FROM users ORDER BY name")]

    def _existing(self, name: str) -> UserRecord:
        user = self.user(name)
        if user is None:
            raise SecurityError("name", f"no user is called {name!r}", status=404)
        return user

    def update_user(
        self,
        name: str,
        *,
        role: str | None = None,
        disabled: bool | None = None,
        sites: Sequence[str] | None = None,
    ) -> UserRecord:
        """Change a user's role, sites or disabled flag; disabling ends its sessions.

        Raises:
            SecurityError: no such user (404), an invalid value, or the change would leave
                no enabled admin (409).
        """
        with self._transaction():
            return self._update_user(name, role=role, disabled=disabled, sites=sites)

    def _update_user(
        self,
        name: str,
        *,
        role: str | None,
        disabled: bool | None,
        sites: Sequence[str] | None,
    ) -> UserRecord:
        user = self._existing(name)
        new_role = user.role if role is None else check_role(role)
        new_disabled = user.disabled if disabled is None else bool(disabled)
        new_sites = user.sites if sites is None else check_sites(sites)
        was_admin = user.role == Role.ADMIN and not user.disabled
        demoted = new_role != Role.ADMIN or new_disabled
        # Locked rows where the database is shared: two servers demoting the last two
        # admins at once must not both see the other one still there.
        admins = self._run(
            "SELECT name FROM users WHERE role = 'admin' AND disabled = 0 ORDER BY name"
            + self._for_update
        )
        if was_admin and demoted and [r[0] for r in admins] == [name]:
            raise SecurityError(
                "role" if new_role != Role.ADMIN else "disabled",
                f"{name!r} is the last enabled admin: make another admin first",
                status=409,
            )
        self._run(
            "UPDATE users SET role = ?, disabled = ?, sites = ? WHERE name = ?",
            (new_role, int(new_disabled), json.dumps(list(new_sites)), name),
        )
        if new_disabled:
            self._run('DELETE FROM sessions WHERE "user" = ?', (name,))
        return self._existing(name)

    def set_locale(self, name: str, locale: str | None) -> UserRecord:
        """Store the user's language (None: none, the browser's decides).

        Raises:
            SecurityError: no such user (404), or not a known language.
        """
        self._existing(name)
        self._run("UPDATE users SET locale = ? WHERE name = ?", (check_locale(locale), name))
        return self._existing(name)

    def set_password(self, name: str, password_hash: str, *, keep_session: str | None) -> None:
        """Store a new password hash, clear the lockout and end the user's sessions but
        ``keep_session`` (the digest of the session that changed it, if any).

        Raises:
            SecurityError: no such user (404).
        """
        self._existing(name)
        self._run(
            "UPDATE users SET hash = ?, failures = 0, lockouts = 0, locked_until_ns = 0"
            " WHERE name = ?",
            (password_hash, name),
        )
        self._run('DELETE FROM sessions WHERE "user" = ? AND key != ?', (name, keep_session or ""))

    def record_failure(
        self, name: str, *, now_ns: int, threshold: int, base_ns: int, max_ns: int
    ) -> int:
        """Count a failed login; when it is the ``threshold``-th in a row, lock the user
        out for ``base * 2**(lockouts so far)``, at most ``max`` (never for good).

        Returns:
            The end of the lockout it started (UTC ns), or 0 when none started.
        """
        with self._transaction():
            row = self._run(
                f"SELECT {_USER_COLUMNS} FROM users WHERE name = ?{self._for_update}", (name,)
            ).fetchone()
            return (
                0
                if row is None
                else self._count_failure(_user(row), now_ns, threshold, base_ns, max_ns)
            )

    def _count_failure(
        self, user: UserRecord, now_ns: int, threshold: int, base_ns: int, max_ns: int
    ) -> int:
        failures, lockouts, until = user.failures + 1, user.lockouts, 0
        if failures >= threshold:
            until = now_ns + min(base_ns * 2 ** min(lockouts, 30), max_ns)
            failures, lockouts = 0, lockouts + 1
        self._run(
            "UPDATE users SET failures = ?, lockouts = ?, locked_until_ns = ? WHERE name = ?",
            (failures, lockouts, until or user.locked_until_ns, user.name),
        )
        return until

    def clear_failures(self, name: str, *, password_hash: str | None = None) -> None:
        """A successful login: the failure counts start over (and a re-made hash is kept)."""
        self._run(
            "UPDATE users SET failures = 0, lockouts = 0, locked_until_ns = 0,"
            " hash = coalesce(?, hash) WHERE name = ?",
            (password_hash, name),
        )

    # second factor (TOTP)

    def set_totp(self, name: str, secret: str | None, *, enabled: bool) -> None:
        """Store a user's TOTP secret (None: remove the second factor).

        Raises:
            SecurityError: no such user (404).
        """
        self._existing(name)
        self._run(
            "UPDATE users SET totp_secret = ?, totp_enabled = ?, totp_step = 0,"
            " totp_pending = NULL WHERE name = ?",
            (secret, int(enabled and secret is not None), name),
        )

    def set_totp_pending(self, name: str, secret: str) -> None:
        """Keep a new TOTP secret for a user who has one enabled, until a code confirms it
        (stored, not in a server's memory: the confirmation may reach another server)."""
        self._run("UPDATE users SET totp_pending = ? WHERE name = ?", (secret, name))

    def totp_pending(self, name: str) -> str | None:
        """The user's new TOTP secret awaiting confirmation (None: none)."""
        row = self._run("SELECT totp_pending FROM users WHERE name = ?", (name,)).fetchone()
        return None if row is None or row[0] is None else str(row[0])

    def remove_totp(self, name: str, *, keep_session: str | None) -> bool:
        """Remove a user's second factor (enabled or pending) and end its sessions but
        ``keep_session`` (a digest); whether it had one enabled.

        Raises:
            SecurityError: no such user (404).
        """
        had = self._existing(name).totp_enabled
        self.set_totp(name, None, enabled=False)
        self._run('DELETE FROM sessions WHERE "user" = ? AND key != ?', (name, keep_session or ""))
        return had

    def totp_secret(self, name: str) -> str | None:
        """A user's TOTP secret, enabled or pending (None: none)."""
        row = self._run("SELECT totp_secret FROM users WHERE name = ?", (name,)).fetchone()
        return None if row is None or row[0] is None else str(row[0])

    def use_totp_step(self, name: str, step: int) -> bool:
        """Mark TOTP time step ``step`` used; False when it, or a later one, was used
        already (a replayed code)."""
        cursor = self._run(
            "UPDATE users SET totp_step = ? WHERE name = ? AND totp_step < ?", (step, name, step)
        )
        return cursor.rowcount == 1

    # sessions

    def create_session(self, user: str, *, now_ns: int) -> str:
        """Open a session; its id (given to the browser once; stored only as a digest)."""
        raw = secrets.token_urlsafe(32)
        self._run(
            'INSERT INTO sessions (key, "user", created_ns, seen_ns) VALUES (?, ?, ?, ?)',
            (digest(raw), user, now_ns, now_ns),
        )
        return raw

    def end_session(self, raw: str) -> str | None:
        """End a session; the user it belonged to (None: there was none)."""
        key = digest(raw)
        row = self._run('SELECT "user" FROM sessions WHERE key = ?', (key,)).fetchone()
        self._run("DELETE FROM sessions WHERE key = ?", (key,))
        return None if row is None else str(row[0])

    def session_user(
        self, raw: str, *, now_ns: int, idle_ns: int, absolute_ns: int
    ) -> UserRecord | None:
        """The enabled user of a live session, marking it used; None when the session is
        unknown, idle or too old (it is then ended) or its user disabled."""
        key = digest(raw)
        row = self._run(
            'SELECT "user", created_ns, seen_ns FROM sessions WHERE key = ?', (key,)
        ).fetchone()
        if row is None:
            return None
        user_name, created, seen = str(row[0]), int(row[1]), int(row[2])
        if now_ns - seen > idle_ns or now_ns - created > absolute_ns:
            self._run("DELETE FROM sessions WHERE key = ?", (key,))
            return None
        user = self.user(user_name)
        if user is None or user.disabled:
            return None
        if now_ns - seen > _SESSION_TOUCH_NS:
            self._run("UPDATE sessions SET seen_ns = ? WHERE key = ?", (now_ns, key))
        return user

    def session_count(self, user: str) -> int:
        """How many sessions ``user`` has open."""
        row = self._run('SELECT count(*) FROM sessions WHERE "user" = ?', (user,)).fetchone()
        return int(row[0])

    # API tokens

    def create_token(
        self,
        name: str,
        *,
        role: str,
        owner: str,
        expires_ns: int | None,
        now_ns: int,
        user: str | None = None,
        secret: str | None = None,
    ) -> tuple[TokenRecord, str]:
        """A new API token and its secret (shown once; stored only as a digest).

        Args:
            user: the user the token acts as (None: it acts as ``token:NAME``).
            secret: a secret chosen by the caller instead of a generated one (a test kit
                that must hand it out before the server starts); it must look like a
                generated one: ``sft_`` and at least 40 more characters.

        Raises:
            SecurityError: the name or role is invalid, or the user unknown.
        """
        check_name(name)
        check_role(role, scopes=True)
        if user is not None:
            self._existing(user)
        if expires_ns is not None and expires_ns <= now_ns:
            raise SecurityError("expires", "expires: must be in the future")
        token_id = secrets.token_hex(6)
        if secret is None:
            secret = f"{TOKEN_PREFIX}{token_id}_{secrets.token_urlsafe(32)}"
        elif not secret.startswith(TOKEN_PREFIX) or len(secret) < len(TOKEN_PREFIX) + 40:
            raise SecurityError("secret", "secret: sft_ and at least 40 more characters")
        self._run(
            'INSERT INTO tokens (id, name, key, role, owner, created_ns, expires_ns, "user")'
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (token_id, name, digest(secret), role, owner, now_ns, expires_ns, user),
        )
        record = self.token(token_id)
        assert record is not None
        return record, secret

    def token(self, token_id: str) -> TokenRecord | None:
        """The token with id ``token_id``, revoked or not."""
        row = self._run(f"SELECT {_TOKEN_COLUMNS} FROM tokens WHERE id = ?", (token_id,)).fetchone()
        return None if row is None else _token(row)

    def tokens(self) -> list[TokenRecord]:
        """Every token, oldest first."""
        return [
            _token(r)
            for r in self._run(f"SELECT {_TOKEN_COLUMNS} FROM tokens ORDER BY created_ns, id")
        ]

    def revoke_token(self, token_id: str, *, now_ns: int) -> TokenRecord:
        """Revoke a token (it stays listed, revoked).

        Raises:
            SecurityError: no such token (404).
        """
        if self.token(token_id) is None:
            raise SecurityError("id", f"no API token has the id {token_id!r}", status=404)
        self._run(
            "UPDATE tokens SET revoked_ns = coalesce(revoked_ns, ?) WHERE id = ?",
            (now_ns, token_id),
        )
        record = self.token(token_id)
        assert record is not None
        return record

    def token_for(self, secret: str, *, now_ns: int) -> TokenRecord | None:
        """The live token whose secret this is; None when unknown, revoked or expired."""
        if not secret.startswith(TOKEN_PREFIX):
            return None
        row = self._run(
            f"SELECT {_TOKEN_COLUMNS} FROM tokens WHERE key = ?", (digest(secret),)
        ).fetchone()
        if row is None:
            return None
        token = _token(row)
        if token.revoked_ns is not None:
            return None
        if token.expires_ns is not None and now_ns >= token.expires_ns:
            return None
        return token


class SecurityStore(SecurityBackend):
    """The SQLite file at ``path`` (None: in memory, for an app built without a data folder).

    Raises:
        SecurityError: the file cannot be opened.
    """

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.where = f"security store {path}"
        try:
            if path is None:
                self._con = sqlite3.connect(":memory:", isolation_level=None)
                for statement in _SCHEMA:
                    self._con.execute(statement)
            else:
                self._con = open_durable(path, _SCHEMA)
            self._add_columns()
        except (OSError, sqlite3.Error) as err:
            raise store_failure(f"security store {path}", err) from err

    def _add_columns(self) -> None:
        """Give a file made by an older release the columns added since (``CREATE TABLE IF
        NOT EXISTS`` leaves an existing table as it is)."""
        for table, column, kind in _ADDED_COLUMNS:
            have = {row[1] for row in self._con.execute(f"PRAGMA table_info({table})")}
            if column not in have:
                self._con.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")

    def close(self) -> None:
        """Close the file."""
        self._con.close()

    def _run(self, sql: str, params: Sequence[object] = ()) -> sqlite3.Cursor:
        try:
            return self._con.execute(sql, params)
        except sqlite3.Error as err:
            conflict = isinstance(err, sqlite3.IntegrityError)
            raise store_failure(self.where, err, conflict=conflict) from err
