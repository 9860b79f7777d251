"""The audit log: who changed what, when, from where, and whether it was accepted.

Every write an operator or engineer makes through the API (alarm actions, edits of the
asset model) is one row, accepted or rejected: time (UTC nanoseconds), user, action,
target, detail (JSON: the before and after of an edit, the comment of an alarm action,
the error of a rejected request), client address and outcome.

One SQLite file in WAL mode with ``synchronous=FULL``, like the alarm journal: an entry
is on disk when :meth:`AuditLog.record` returns, which is before the request is answered.
The file is append-only by construction: triggers abort every ``UPDATE`` and ``DELETE``,
so a bug (or a hand with the ``sqlite3`` shell that does not drop the triggers first)
cannot quietly rewrite history. And the rows are hash-chained: each stores the SHA-256
of the previous row's hash and its own fields, so a row edited, inserted or deleted in
the middle by someone who did drop the triggers breaks the chain from there on, and
:meth:`AuditStore.verify` (``GET /api/v1/audit/verify``) names the first broken row.
Cutting rows off the end leaves a shorter valid chain: keep the head (``seq`` and hash,
in every verify answer) somewhere else, an export or a backup, to detect that too.

SQLite runs on one worker thread behind the async methods, so the event loop never
waits on a disk flush. Scaled out (``historian.shared = true``), the log is one table in
the shared PostgreSQL instead (:mod:`.pg_audit`): the same chain, rows and checks, behind
the same :class:`AuditBackend` protocol.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import sqlite3
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol, TypeVar

from shopfloor.errors import ShopfloorError
from shopfloor.model import now_ns
from shopfloor.runtime.durable_sqlite import open_durable
from shopfloor.server.security.denials import DenialCoalescer, DenialKey, Summary

__all__ = [
    "DENIAL_WINDOW_S",
    "DENIED",
    "AuditBackend",
    "AuditEntry",
    "AuditError",
    "AuditLog",
    "AuditStore",
    "ChainReport",
    "Outcome",
    "chain_hash",
]

T = TypeVar("T")

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS audit ("
    " seq INTEGER PRIMARY KEY AUTOINCREMENT, ts_ns INTEGER NOT NULL, user TEXT NOT NULL,"
    " action TEXT NOT NULL, target TEXT NOT NULL, detail TEXT NOT NULL,"
    " client TEXT NOT NULL, outcome TEXT NOT NULL, hash TEXT NOT NULL DEFAULT '')",
    "CREATE INDEX IF NOT EXISTS audit_ts ON audit (ts_ns)",
    "CREATE INDEX IF NOT EXISTS audit_target ON audit (target)",
    "CREATE TRIGGER IF NOT EXISTS audit_no_update BEFORE UPDATE ON audit"
    " BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END",
    "CREATE TRIGGER IF NOT EXISTS audit_no_delete BEFORE DELETE ON audit"
    " BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END",
)
DENIED = "access.denied"
"""The action of a refused request (a 403): see :meth:`AuditLog.deny`."""
DENIAL_WINDOW_S = 10.0
"""Identical denials within this many seconds are counted into one entry."""
AUDIT_COLUMNS = 'seq, ts_ns, "user", action, target, detail, client, outcome, hash'
GENESIS = "0" * 64
"""The "previous hash" of the first row."""


def chain_hash(previous: str, row: tuple[Any, ...]) -> str:
    """The hash of a row: SHA-256 over the previous row's hash and the row's fields
    (``seq, ts_ns, user, action, target, detail, client, outcome``) as canonical JSON."""
    text = json.dumps([previous, *row], ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class ChainReport:
    """What :meth:`AuditStore.verify` found.

    Attributes:
        rows: rows checked.
        head_seq: the last row's ``seq`` (0 for an empty log).
        head_hash: the last row's hash: kept elsewhere, it also detects rows cut off the end.
        broken_seq: the first row whose hash does not follow from the rows before it, or
            None when the chain holds.
        unchained: rows written before the log was chained (an older version), not checked.
    """

    rows: int
    head_seq: int
    head_hash: str
    broken_seq: int | None
    unchained: int = 0


class AuditError(ShopfloorError):
    """The audit log cannot be written or read (disk full, damaged file)."""


class Outcome(StrEnum):
    """How a write ended."""

    OK = "ok"
    """Accepted and done."""
    REJECTED = "rejected"
    """Refused: invalid, conflicting, unknown target, stale version (a 4xx answer)."""
    ERROR = "error"
    """The server failed while doing it (a 5xx answer); it may be half done."""


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One audited write. ``seq`` orders the log (timestamps may tie); it is 0 before
    the entry is stored."""

    ts_ns: int
    user: str
    action: str
    target: str
    outcome: Outcome
    client: str = ""
    detail: Mapping[str, Any] = field(default_factory=dict)
    seq: int = 0
    hash: str = ""
    """The row's link in the hash chain (see :func:`chain_hash`); empty before it is stored."""


class AuditBackend(Protocol):
    """Where the entries are kept: the SQLite file (:class:`AuditStore`) or the shared
    PostgreSQL (:class:`~.pg_audit.PgAuditStore`). Blocking: one thread only."""

    def append(self, entry: AuditEntry) -> tuple[int, str]:
        """Store ``entry`` at the chain's head; its sequence number and hash."""
        ...

    def verify(self, *, batch: int = 10_000) -> ChainReport:
        """Recompute the chain; the first row that does not follow."""
        ...

    def entries(
        self,
        *,
        since_ns: int | None = None,
        until_ns: int | None = None,
        user: str | None = None,
        action: str | None = None,
        target_prefix: str | None = None,
        outcome: Outcome | None = None,
        after_seq: int = 0,
        before_seq: int | None = None,
        newest_first: bool = False,
        limit: int = 1000,
    ) -> list[AuditEntry]:
        """Entries in order of writing, filtered (see :meth:`AuditStore.entries`)."""
        ...

    def close(self) -> None:
        """Close the store."""
        ...


def entry_row(seq: int, entry: AuditEntry) -> tuple[Any, ...]:
    """The stored fields of ``entry`` numbered ``seq``: what :func:`chain_hash` covers."""
    detail = json.dumps(dict(entry.detail), ensure_ascii=False, default=str)
    return (
        seq,
        entry.ts_ns,
        entry.user,
        entry.action,
        entry.target,
        detail,
        entry.client,
        entry.outcome.value,
    )


def verify_rows(chunks: Iterable[Sequence[Sequence[Any]]]) -> ChainReport:
    """Recompute the hash chain over rows of :data:`AUDIT_COLUMNS` in ``seq`` order, read in
    chunks."""
    previous, rows, unchained, last_seq = GENESIS, 0, 0, 0
    for chunk in chunks:
        for r in chunk:
            rows += 1
            last_seq = r[0]
            if not r[8] and previous == GENESIS:
                unchained += 1  # written before the chain existed
                continue
            if r[8] != chain_hash(previous, tuple(r[:8])):
                return ChainReport(rows, last_seq, r[8], r[0], unchained)
            previous = r[8]
    return ChainReport(rows, last_seq, previous, None, unchained)


def entries_query(
    *,
    since_ns: int | None = None,
    until_ns: int | None = None,
    user: str | None = None,
    action: str | None = None,
    target_prefix: str | None = None,
    outcome: Outcome | None = None,
    after_seq: int = 0,
    before_seq: int | None = None,
    newest_first: bool = False,
    limit: int = 1000,
) -> tuple[str, list[object]]:
    """The query (``?`` placeholders, SQL both databases speak) of :meth:`AuditStore.entries`."""
    where = ["seq > ?"]
    params: list[object] = [after_seq]
    if before_seq is not None:
        where.append("seq < ?")
        params.append(before_seq)
    for column, op, value in (
        ("ts_ns", ">=", since_ns),
        ("ts_ns", "<", until_ns),
        ('"user"', "=", user),
        ("action", "=", action),
        ("outcome", "=", None if outcome is None else outcome.value),
    ):
        if value is not None:
            where.append(f"{column} {op} ?")
            params.append(value)
    if target_prefix:
        # substr instead of LIKE: a prefix may hold % and _ (alarm names do).
        where.append("substr(target, 1, ?) = ?")
        params += [len(target_prefix), target_prefix]
    order = "DESC" if newest_first else "ASC"
    sql = (
        f"SELECT {AUDIT_COLUMNS} FROM audit WHERE {' AND '.join(where)}"
        f" ORDER BY seq {order} LIMIT ?"
    )
    return sql, [*params, limit]


def entry_of(r: Sequence[Any]) -> AuditEntry:
    """The entry of a row of :data:`AUDIT_COLUMNS`."""
    return AuditEntry(
        seq=r[0],
        ts_ns=r[1],
        user=r[2],
        action=r[3],
        target=r[4],
        detail=json.loads(r[5]),
        client=r[6],
        outcome=Outcome(r[7]),
        hash=r[8],
    )


class AuditStore:
    """The audit file at ``path`` (created with its folder). Blocking: one thread only.

    Raises:
        AuditError: the file cannot be opened or created.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self._con = open_durable(path, _SCHEMA)
            columns = {row[1] for row in self._con.execute("PRAGMA table_info(audit)")}
            if "hash" not in columns:  # a log written before the chain: rows stay unchained
                self._con.execute("ALTER TABLE audit ADD COLUMN hash TEXT NOT NULL DEFAULT ''")
        except (OSError, sqlite3.Error) as err:
            raise AuditError(f"audit log {path}: {err}") from err

    def close(self) -> None:
        """Close the file."""
        self._con.close()

    def append(self, entry: AuditEntry) -> tuple[int, str]:
        """Store ``entry``; its sequence number and hash.

        The head of the chain is read and the row inserted in one ``BEGIN IMMEDIATE``
        transaction, so another process appending to the same file (``shopfloor backup``
        or ``shopfloor users`` while the server runs) never forks the chain: the second
        writer waits for the first and links to its row.

        Raises:
            AuditError: nothing was stored.
        """
        con = self._con
        try:
            con.execute("BEGIN IMMEDIATE")
            try:
                head = con.execute("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1")
                last = head.fetchone()
                head_seq = 0 if last is None else int(last[0])
                head_hash = GENESIS if last is None or not last[1] else str(last[1])
                row = entry_row(head_seq + 1, entry)
                digest = chain_hash(head_hash, row)
                con.execute(
                    "INSERT INTO audit (seq, ts_ns, user, action, target, detail, client,"
                    " outcome, hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (*row, digest),
                )
                con.execute("COMMIT")
            except BaseException:
                con.execute("ROLLBACK")
                raise
        except sqlite3.Error as err:
            raise AuditError(f"audit log {self.path}: cannot append: {err}") from err
        return row[0], digest

    def verify(self, *, batch: int = 10_000) -> ChainReport:
        """Recompute the hash chain over every row; the first row that does not follow.

        Raises:
            AuditError: the file cannot be read.
        """
        try:
            cursor = self._con.execute(f"SELECT {AUDIT_COLUMNS} FROM audit ORDER BY seq")
            return verify_rows(iter(lambda: cursor.fetchmany(batch), []))
        except sqlite3.Error as err:
            raise AuditError(f"audit log {self.path}: cannot read: {err}") from err

    def entries(
        self,
        *,
        since_ns: int | None = None,
        until_ns: int | None = None,
        user: str | None = None,
        action: str | None = None,
        target_prefix: str | None = None,
        outcome: Outcome | None = None,
        after_seq: int = 0,
        before_seq: int | None = None,
        newest_first: bool = False,
        limit: int = 1000,
    ) -> list[AuditEntry]:
        """Entries in order of writing, in ``[since, until)``, filtered by the rest.

        ``newest_first`` reverses the order, so a page of the newest ``limit`` entries is
        one query; page back through them with ``before_seq`` (the last seq seen).
        """
        sql, params = entries_query(
            since_ns=since_ns,
            until_ns=until_ns,
            user=user,
            action=action,
            target_prefix=target_prefix,
            outcome=outcome,
            after_seq=after_seq,
            before_seq=before_seq,
            newest_first=newest_first,
            limit=limit,
        )
        try:
            rows = self._con.execute(sql, params).fetchall()
        except sqlite3.Error as err:
            raise AuditError(f"audit log {self.path}: cannot read: {err}") from err
        return [entry_of(r) for r in rows]


class AuditLog:
    """The async façade of :class:`AuditStore`: ``await start()``, ``await record(...)``,
    ``await entries(...)``, ``await close()``.

    Args:
        path: the SQLite file (``audit.sqlite`` in the server's data folder).
        clock: wall time in UTC nanoseconds, stamped on each entry.
        store: opens the store instead of the file at ``path`` (the shared PostgreSQL of
            a scaled-out installation); called on the worker thread.
        denial_window_s: identical refusals (access denials, anonymous writes, throttled
            logins) within this many seconds of the one written are counted into one
            summary entry (:mod:`.denials`); 0 writes each.
        monotonic: the monotonic clock of that window (tests move it).
    """

    def __init__(
        self,
        path: Path,
        *,
        clock: Callable[[], int] = now_ns,
        store: Callable[[], AuditBackend] | None = None,
        denial_window_s: float = DENIAL_WINDOW_S,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path = path
        self._clock = clock
        self._open: Callable[[], AuditBackend] = store or (lambda: AuditStore(path))
        self._store: AuditBackend | None = None
        self._denials = DenialCoalescer(denial_window_s, monotonic=monotonic)
        self._worker = ThreadPoolExecutor(1, thread_name_prefix="audit-log")
        self._closed = False

    async def start(self) -> None:
        """Open (or create) the file.

        Raises:
            AuditError: it cannot be opened.
        """
        self._store = await self._run(self._open)

    async def close(self) -> None:
        """Close the file and stop the worker. Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._store is not None:
            for summary in self._denials.drain():
                await self._write_summary(summary)
        store, self._store = self._store, None
        if store is not None:
            await self._run(store.close)
        self._worker.shutdown(wait=True)

    async def record(
        self,
        *,
        user: str,
        action: str,
        target: str,
        outcome: Outcome,
        client: str = "",
        detail: Mapping[str, Any] | None = None,
    ) -> AuditEntry:
        """Store one entry stamped now, durably; the entry with its ``seq``.

        Raises:
            AuditError: it could not be stored (the caller must not claim success).
        """
        entry = AuditEntry(
            ts_ns=self._clock(),
            user=user,
            action=action,
            target=target,
            outcome=outcome,
            client=client,
            detail=dict(detail or {}),
        )
        seq, digest = await self._run(lambda: self._opened().append(entry))
        return dataclasses.replace(entry, seq=seq, hash=digest)

    async def deny(
        self,
        key: DenialKey,
        *,
        user: str,
        target: str,
        client: str,
        detail: Mapping[str, Any],
        base: Mapping[str, Any],
    ) -> AuditEntry | None:
        """Audit a refused request as ``access.denied`` (outcome ``rejected``), coalescing
        repeats of ``key`` (see :mod:`.denials`); the entry written, None when only counted.

        Args:
            key: who, from where, method and route: what makes two denials the same.
            detail: this denial's detail (the error, the object).
            base: what a summary of ``key`` repeats (method, route).

        Raises:
            AuditError: it could not be stored.
        """
        return await self.refused(
            key, action=DENIED, user=user, target=target, client=client, detail=detail, base=base
        )

    async def refused(
        self,
        key: DenialKey,
        *,
        action: str,
        user: str,
        target: str,
        client: str,
        detail: Mapping[str, Any],
        base: Mapping[str, Any],
    ) -> AuditEntry | None:
        """Audit a refusal that anyone can repeat at will (a 403, an anonymous 401, a
        throttled login) as ``action`` (outcome ``rejected``): the first of ``key`` in a
        window is written, its repeats counted into one summary (see :mod:`.denials`);
        the entry written, None when only counted.

        Args:
            key: what makes two refusals of ``action`` the same (who, address, route...).
            detail: this refusal's detail (the error, the object).
            base: what a summary of ``key`` repeats (method, route, status).

        Raises:
            AuditError: it could not be stored.
        """
        write, due = self._denials.admit(
            (action, *key),
            action=action,
            user=user,
            client=client,
            target=target,
            ts_ns=self._clock(),
            base=dict(base),
        )
        for summary in due:
            await self._write_summary(summary)
        if not write:
            return None
        return await self.record(
            user=user,
            action=action,
            target=target,
            outcome=Outcome.REJECTED,
            client=client,
            detail=detail,
        )

    async def _write_summary(self, summary: Summary) -> None:
        await self.record(
            user=summary.user,
            action=summary.action,
            target=summary.target,
            outcome=Outcome.REJECTED,
            client=summary.client,
            detail=summary.detail,
        )

    async def verify(self) -> ChainReport:
        """Recompute the hash chain (see :meth:`AuditStore.verify`)."""
        return await self._run(lambda: self._opened().verify())

    async def entries(self, **filters: Any) -> list[AuditEntry]:
        """Entries in order of writing (the filters of :meth:`AuditStore.entries`)."""
        return await self._run(lambda: self._opened().entries(**filters))

    def _opened(self) -> AuditBackend:
        if self._store is None:
            raise AuditError(f"audit log {self.path}: not open")
        return self._store

    async def _run(self, fn: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._worker, fn)
