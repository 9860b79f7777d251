"""The writes switches in the shared PostgreSQL (``historian.shared = true``).

Behind a load balancer an admin turns a connector's writes on through one API server and
the next request may reach another, so the switches are a table
(``<historian schema>_security.write_switches``, :mod:`~shopfloor.server.security.pg_tables`)
and each server reads it again before it answers about a switch or lets a write through
(:meth:`PgWriteSwitches.refresh`): a switch turned off on one server stops the writes on
every other at their next step, not after some cache expires. One small primary-key read
per write step, which is rare and human-paced. A table that cannot be read fails closed
(every connector off), as a damaged ``writes.json`` does.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from pathlib import Path
from typing import Any

import psycopg

from shopfloor.model import now_ns
from shopfloor.server.security.pg_tables import connect
from shopfloor.server.writes.switches import WriteSwitches

__all__ = ["PgWriteSwitches"]

logger = logging.getLogger(__name__)


class PgWriteSwitches(WriteSwitches):
    """The switches in ``schema`` of the database at ``dsn``.

    Args:
        dsn: the historian's connection string.
        schema: the shared state's schema (:func:`~.pg_tables.security_schema`).
    """

    def __init__(self, dsn: str, schema: str) -> None:
        super().__init__(Path(f"postgresql:{schema}.write_switches"))
        self._dsn = dsn
        self.schema = schema
        self._con: psycopg.Connection[Any] | None = None
        self._db_lock = threading.Lock()
        """One statement or transaction at a time on the connection (worker threads vary)."""

    def _connection(self) -> psycopg.Connection[Any]:
        con = self._con
        if con is None or con.closed:
            con = self._con = connect(self._dsn, self.schema, application_name="shopfloor-writes")
        return con

    def _read(self) -> dict[str, bool]:
        with self._db_lock:
            for attempt in (1, 2):
                try:
                    con = self._connection()
                    rows = con.execute("SELECT connector, enabled FROM write_switches")
                    return {str(c): bool(e) for c, e in rows.fetchall()}
                except psycopg.Error as err:
                    if attempt == 1 and self._con is not None and self._con.closed:
                        continue  # lost between two reads: once more on a new connection
                    logger.error(
                        "the writes switches in %s cannot be read (%s): writes stay off",
                        self.schema,
                        err,
                    )
            return {}

    def load(self) -> None:
        """Read the table (blocking: at start)."""
        self._enabled = self._read()

    async def refresh(self) -> None:
        """Read the table again: another server may have turned a switch."""
        self._enabled = await asyncio.to_thread(self._read)

    def _store(self, connector: str, enabled: bool) -> tuple[bool, dict[str, bool]]:
        with self._db_lock:
            try:
                con = self._connection()
                with con.transaction():
                    row = con.execute(
                        "SELECT enabled FROM write_switches WHERE connector = %s FOR UPDATE",
                        [connector],
                    ).fetchone()
                    con.execute(
                        "INSERT INTO write_switches (connector, enabled, changed_ns) "
                        "VALUES (%s, %s, %s) ON CONFLICT (connector) DO UPDATE "
                        "SET enabled = excluded.enabled, changed_ns = excluded.changed_ns",
                        [connector, enabled, now_ns()],
                    )
                    every = con.execute("SELECT connector, enabled FROM write_switches")
                    after = {str(c): bool(e) for c, e in every.fetchall()}
            except psycopg.Error as err:
                raise OSError(f"the writes switches in {self.schema}: {err}") from err
        return bool(row and row[0]), after

    async def set(self, connector: str, enabled: bool) -> bool:
        """Turn writes through ``connector`` on or off for every server; what it was before.

        Raises:
            OSError: the table cannot be written (the switch is unchanged).
        """
        async with self._lock:
            before, self._enabled = await asyncio.to_thread(self._store, connector, enabled)
            return before

    def close(self) -> None:
        """Close the connection."""
        with self._db_lock:
            if self._con is not None:
                self._con.close()
                self._con = None
