"""Users, sessions and API tokens in the shared PostgreSQL (``historian.shared = true``).

The same rules as the SQLite file (:class:`~.store.SecurityBackend`), over one psycopg
connection owned by :class:`~.service.Auth`'s worker thread, so a login on one API server
is a session on every other. Read-modify-writes (failure counts and lockouts, the last
admin check) lock their rows (``FOR UPDATE``) in a transaction: two servers counting
failed logins of one user at once count both. A lost connection is opened again on the
next call; a statement outside a transaction that found it lost is run once more on the
new one (a transaction's statements are not: the transaction is gone with it).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import psycopg

from shopfloor.server.security.pg_tables import connect
from shopfloor.server.security.store import Rows, SecurityBackend, SecurityError, store_failure

__all__ = ["PgSecurityStore"]


class PgSecurityStore(SecurityBackend):
    """The security tables in ``schema`` (see :mod:`.pg_tables`) of the database at ``dsn``.

    Raises:
        SecurityError: the database cannot be reached.
    """

    _for_update = " FOR UPDATE"

    def __init__(self, dsn: str, schema: str) -> None:
        self._dsn = dsn
        self.schema = schema
        self.where = f"security store (PostgreSQL schema {schema})"
        self._con: psycopg.Connection[Any] | None = None
        self._in_transaction = False
        self._connection()

    def _connection(self) -> psycopg.Connection[Any]:
        con = self._con
        if con is not None and not con.closed:
            return con
        try:
            self._con = connect(self._dsn, self.schema, application_name="shopfloor-security")
        except psycopg.Error as err:
            raise store_failure(f"{self.where}: cannot connect", err) from err
        return self._con

    def close(self) -> None:
        """Close the connection."""
        if self._con is not None:
            self._con.close()
            self._con = None

    def _failure(self, err: psycopg.Error) -> SecurityError:
        return store_failure(self.where, err, conflict=isinstance(err, psycopg.IntegrityError))

    def _run(self, sql: str, params: Sequence[object] = ()) -> Rows:
        for attempt in (1, 2):
            con = self._connection()
            try:
                return con.execute(sql.replace("?", "%s"), params)
            except psycopg.Error as err:
                if not con.closed:
                    raise self._failure(err) from err
                self._con = None  # lost (a restart, an idle timeout): connect again
                if attempt == 2 or self._in_transaction:
                    raise self._failure(err) from err
        raise AssertionError("unreachable")  # pragma: no cover

    @contextmanager
    def _transaction(self) -> Iterator[object]:
        con = self._connection()
        self._in_transaction = True
        try:
            with con.transaction() as tx:
                yield tx
        except psycopg.Error as err:
            if con.closed:
                self._con = None
            raise self._failure(err) from err
        finally:
            self._in_transaction = False
