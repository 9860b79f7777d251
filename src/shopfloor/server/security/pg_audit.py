"""The audit log in the shared PostgreSQL (``historian.shared = true``): one chain for every
API server.

Each server appends from its own process, so the head of the chain cannot be kept in
memory as the SQLite file's one writer does. An append is one transaction that first
takes a transaction advisory lock (:data:`~.pg_tables.AUDIT_LOCK_CLASS`), then reads the
head row, numbers and hashes the new row after it and inserts it: appends of every server
are serialised, so the rows form one chain whoever wrote them. The primary key on ``seq``
would refuse a second row at the same place even without the lock. Append-only is
enforced by the database: a trigger raises on ``UPDATE``, ``DELETE`` and ``TRUNCATE``
(:mod:`.pg_tables`). Blocking: one thread only (:class:`~.audit.AuditLog`'s worker).
"""

from __future__ import annotations

from typing import Any

import psycopg

from shopfloor.server.security.audit import (
    AUDIT_COLUMNS,
    GENESIS,
    AuditEntry,
    AuditError,
    ChainReport,
    Outcome,
    chain_hash,
    entries_query,
    entry_of,
    entry_row,
    verify_rows,
)
from shopfloor.server.security.pg_tables import AUDIT_LOCK_CLASS, connect

__all__ = ["PgAuditStore"]


class PgAuditStore:
    """The ``audit`` table in ``schema`` of the database at ``dsn``.

    Raises:
        AuditError: the database cannot be reached.
    """

    def __init__(self, dsn: str, schema: str) -> None:
        self._dsn = dsn
        self.schema = schema
        self._con: psycopg.Connection[Any] | None = None
        self._connection()

    def _connection(self) -> psycopg.Connection[Any]:
        con = self._con
        if con is not None and not con.closed:
            return con
        try:
            self._con = connect(self._dsn, self.schema, application_name="shopfloor-audit")
        except psycopg.Error as err:
            raise AuditError(f"audit log (PostgreSQL schema {self.schema}): {err}") from err
        return self._con

    def _failed(self, what: str, err: psycopg.Error) -> AuditError:
        if self._con is not None and self._con.closed:
            self._con = None  # connect again next time
        return AuditError(f"audit log (PostgreSQL schema {self.schema}): {what}: {err}")

    def close(self) -> None:
        """Close the connection."""
        if self._con is not None:
            self._con.close()
            self._con = None

    def append(self, entry: AuditEntry) -> tuple[int, str]:
        """Store ``entry`` at the head of the one chain; its sequence number and hash.

        Raises:
            AuditError: nothing was stored.
        """
        for attempt in (1, 2):
            con = self._connection()
            locked = False
            try:
                with con.transaction():
                    con.execute(
                        "SELECT pg_advisory_xact_lock(%s, hashtext(%s))",
                        [AUDIT_LOCK_CLASS, self.schema],
                    )
                    locked = True
                    head = con.execute("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1")
                    last = head.fetchone()
                    seq = 1 if last is None else int(last[0]) + 1
                    previous = GENESIS if last is None or not last[1] else str(last[1])
                    row = entry_row(seq, entry)
                    digest = chain_hash(previous, row)
                    con.execute(
                        'INSERT INTO audit (seq, ts_ns, "user", action, target, detail, client,'
                        " outcome, hash) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
                        (*row, digest),
                    )
            except psycopg.Error as err:
                # A connection found lost before the lock was taken stored nothing: once
                # more on a new one. Lost later, the row may or may not be in: no retry.
                if attempt == 1 and not locked and con.closed:
                    self._con = None
                    continue
                raise self._failed("cannot append", err) from err
            return seq, digest
        raise AssertionError("unreachable")  # pragma: no cover

    def verify(self, *, batch: int = 10_000) -> ChainReport:
        """Recompute the hash chain over every row (read in ``batch``-row chunks through a
        server-side cursor); the first row that does not follow.

        Raises:
            AuditError: the table cannot be read.
        """
        con = self._connection()
        try:
            with con.transaction(), con.cursor(name="audit_verify") as cursor:
                cursor.execute(f"SELECT {AUDIT_COLUMNS} FROM audit ORDER BY seq")
                return verify_rows(iter(lambda: cursor.fetchmany(batch), []))
        except psycopg.Error as err:
            raise self._failed("cannot read", err) from err

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
        """Entries in order of writing (the filters of :meth:`.audit.AuditStore.entries`).

        Raises:
            AuditError: the table cannot be read.
        """
        query, params = entries_query(
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
        con = self._connection()
        try:
            rows = con.execute(query.replace("?", "%s"), params).fetchall()
        except psycopg.Error as err:
            raise self._failed("cannot read", err) from err
        return [entry_of(r) for r in rows]
