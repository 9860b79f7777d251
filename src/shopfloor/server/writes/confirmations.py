"""Where the confirmations of writes wait between the two steps: memory, or PostgreSQL.

A single server keeps them in its memory (:class:`MemoryConfirmations`). Behind a load
balancer the confirm step may reach another API server than the one that asked, so with
``historian.shared = true`` they wait in the shared state's schema
(``<historian schema>_security.write_confirmations``, :class:`PgConfirmations`):

* **Single use, atomically.** Taking a confirmation is one ``UPDATE … SET used_at =
  now() WHERE id = … AND used_at IS NULL RETURNING …``: two servers racing for one
  confirmation both run it, PostgreSQL's row lock makes the second wait for the first
  and then find it used. A used row stays (until it is old) so that a replay is named
  as one (``confirmation_used``), as in memory.
* **Expiry on one clock**: the database's ``now()``, not each server's.
* **Ids as digests** (SHA-256), like the sessions: someone reading the table cannot
  confirm a write.
* **Bounded**: at most ``max_pending`` unused confirmations (the oldest beyond are
  dropped, counted and logged once) and as many used or expired ones (kept for
  ``_KEEP_S`` to name replays).
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, Final, Protocol

import psycopg

from shopfloor.model.control import WritableTag
from shopfloor.server.security.pg_tables import SETUP_LOCK_CLASS, connect
from shopfloor.server.writes.ticket import Confirmation, WriteDenied

__all__ = ["Confirmations", "MemoryConfirmations", "PgConfirmations"]

logger = logging.getLogger(__name__)

_KEEP_S: Final = 600
"""How long a used or expired confirmation is kept after its expiry (to name a replay)."""

_TABLE: Final = (
    "CREATE TABLE IF NOT EXISTS write_confirmations ("
    " id text PRIMARY KEY, connector text NOT NULL, path text NOT NULL, ticket text NOT NULL,"
    ' "user" text NOT NULL, expires_at timestamptz NOT NULL, used_at timestamptz)',
    "CREATE INDEX IF NOT EXISTS write_confirmations_expires ON write_confirmations (expires_at)",
)
_INSERT: Final = (
    'INSERT INTO write_confirmations (id, connector, path, ticket, "user", expires_at)'
    " VALUES (%s, %s, %s, %s, %s, now() + make_interval(secs => %s))"
)
_FORGET_OLD: Final = (
    "DELETE FROM write_confirmations WHERE expires_at < now() - make_interval(secs => %s)"
)
_DROP_PENDING: Final = (
    "DELETE FROM write_confirmations WHERE id IN (SELECT id FROM write_confirmations"
    " WHERE used_at IS NULL AND expires_at >= now() ORDER BY expires_at DESC OFFSET %s)"
)
_DROP_SPENT: Final = (
    "DELETE FROM write_confirmations WHERE id IN (SELECT id FROM write_confirmations"
    " WHERE used_at IS NOT NULL OR expires_at < now() ORDER BY expires_at DESC OFFSET %s)"
)
_TAKE: Final = (
    "UPDATE write_confirmations SET used_at = now() WHERE id = %s AND used_at IS NULL"
    " RETURNING ticket, expires_at < now()"
)
_SPENT: Final = "SELECT path FROM write_confirmations WHERE id = %s"
_WITHDRAW: Final = "DELETE FROM write_confirmations WHERE connector = %s AND used_at IS NULL"


def _used(path: str | None) -> WriteDenied:
    return WriteDenied(
        "confirmation_used",
        "confirmation",
        "this confirmation was already used: ask again",
        path=path,
    )


def _unknown() -> WriteDenied:
    return WriteDenied(
        "confirmation_unknown",
        "confirmation",
        "this confirmation is unknown or was withdrawn: ask again",
    )


def _expired(within_s: float, path: str) -> WriteDenied:
    return WriteDenied(
        "confirmation_expired",
        "confirmation",
        f"this confirmation expired ({within_s:g} s): ask again",
        path=path,
    )


class Confirmations(Protocol):
    """The confirmations waiting for their second step."""

    dropped: int
    """Confirmations dropped unused because too many waited."""

    async def put(self, ticket: Confirmation, *, within_s: float) -> None:
        """Keep ``ticket`` for ``within_s`` seconds."""

    async def take(self, confirmation_id: str, *, within_s: float) -> Confirmation:
        """The ticket, taken once.

        Raises:
            WriteDenied: unknown, used before, or expired.
        """

    async def withdraw(self, connector: str) -> None:
        """Forget every unused ticket of ``connector`` (its writes were turned off)."""

    def close(self) -> None:
        """Let go of the storage."""


class MemoryConfirmations:
    """This server's own confirmations, expiring on ``monotonic``.

    Args:
        monotonic: seconds on a monotonic clock (tests move it).
        max_pending: the most confirmations waiting at once; the oldest is dropped beyond.
    """

    def __init__(self, *, monotonic: Callable[[], float], max_pending: int) -> None:
        self._monotonic = monotonic
        self._max_pending = max_pending
        self._pending: OrderedDict[str, Confirmation] = OrderedDict()
        self._spent: OrderedDict[str, str] = OrderedDict()  # id -> tag, to name a replay
        self.dropped = 0

    async def put(self, ticket: Confirmation, *, within_s: float) -> None:
        """Keep ``ticket`` until its ``expires_s``."""
        now = self._monotonic()
        for key in [k for k, c in self._pending.items() if c.expires_s < now]:
            del self._pending[key]
        while len(self._pending) >= self._max_pending:
            self._pending.popitem(last=False)
            self.dropped += 1
            if self.dropped == 1:
                logger.warning(
                    "more than %d write confirmations waiting: the oldest are dropped",
                    self._max_pending,
                )
        self._pending[ticket.id] = ticket

    async def take(self, confirmation_id: str, *, within_s: float) -> Confirmation:
        """The ticket, taken once (see :class:`Confirmations`)."""
        ticket = self._pending.pop(confirmation_id, None)
        if ticket is None:
            spent = self._spent.get(confirmation_id)
            raise _unknown() if spent is None else _used(spent)
        self._spent[confirmation_id] = ticket.tag.path
        while len(self._spent) > self._max_pending:
            self._spent.popitem(last=False)
        if self._monotonic() > ticket.expires_s:
            raise _expired(within_s, ticket.tag.path)
        return ticket

    async def withdraw(self, connector: str) -> None:
        """Forget every unused ticket of ``connector``."""
        for key in [k for k, c in self._pending.items() if c.tag.connector == connector]:
            del self._pending[key]

    def close(self) -> None:
        """Nothing to let go of."""


def _digest(confirmation_id: str) -> str:
    return hashlib.sha256(confirmation_id.encode()).hexdigest()


def _encode(ticket: Confirmation) -> str:
    doc = {
        "tag": dataclasses.asdict(ticket.tag),
        "old": ticket.old,
        "new": ticket.new,
        "asked": ticket.asked,
        "user": ticket.user,
    }
    return json.dumps(doc)


def _decode(confirmation_id: str, text: str) -> Confirmation:
    doc = json.loads(text)
    tag = doc["tag"]
    tag["states"] = tuple((int(k), str(v)) for k, v in tag["states"])
    return Confirmation(
        id=confirmation_id,
        tag=WritableTag(**tag),
        old=doc["old"],
        new=doc["new"],
        asked=doc["asked"],
        user=doc["user"],
        expires_s=0.0,  # the database's clock decides
    )


class PgConfirmations:
    """The confirmations of every API server, in ``schema`` of the database at ``dsn``.

    Blocking statements run in a worker thread, one at a time on one connection (made
    again once when lost). A database that cannot be reached refuses the step
    (``confirmations_unavailable``): nothing is written without its confirmation.

    Args:
        dsn: the historian's connection string.
        schema: the shared state's schema (:func:`~..security.pg_tables.security_schema`).
        max_pending: the most unused confirmations waiting at once, over every server.
    """

    def __init__(self, dsn: str, schema: str, *, max_pending: int) -> None:
        self._dsn = dsn
        self.schema = schema
        self._max_pending = max_pending
        self._con: psycopg.Connection[Any] | None = None
        self._lock = threading.Lock()
        self.dropped = 0

    def _connection(self) -> psycopg.Connection[Any]:
        con = self._con
        if con is not None and not con.closed:
            return con
        con = connect(self._dsn, self.schema, application_name="shopfloor-writes")
        try:
            with con.transaction():  # servers starting together would race in CREATE
                con.execute(
                    "SELECT pg_advisory_xact_lock(%s, hashtext(%s))",
                    [SETUP_LOCK_CLASS, self.schema],
                )
                for statement in _TABLE:
                    con.execute(statement)
        except BaseException:
            con.close()
            raise
        self._con = con
        return con

    def _run(self, work: Callable[[psycopg.Connection[Any]], Any]) -> Any:
        with self._lock:
            for attempt in (1, 2):
                try:
                    return work(self._connection())
                except psycopg.OperationalError as err:
                    if self._con is not None:
                        self._con.close()
                        self._con = None
                    if attempt == 2:
                        raise self._unavailable(err) from err
                except psycopg.Error as err:
                    raise self._unavailable(err) from err
        raise AssertionError("unreachable")  # pragma: no cover

    def _unavailable(self, err: psycopg.Error) -> WriteDenied:
        logger.error("write confirmations in %s: %s", self.schema, err)
        return WriteDenied(
            "confirmations_unavailable",
            None,
            "the shared database keeping the confirmations of writes does not answer: try again",
        )

    def _put(self, ticket: Confirmation, within_s: float) -> int:
        def work(con: psycopg.Connection[Any]) -> int:
            with con.transaction():
                con.execute(_FORGET_OLD, [_KEEP_S])
                con.execute(
                    _INSERT,
                    [
                        _digest(ticket.id),
                        ticket.tag.connector,
                        ticket.tag.path,
                        _encode(ticket),
                        ticket.user,
                        within_s,
                    ],
                )
                dropped = con.execute(_DROP_PENDING, [self._max_pending]).rowcount
                con.execute(_DROP_SPENT, [self._max_pending])
            return int(dropped)

        return int(self._run(work))

    async def put(self, ticket: Confirmation, *, within_s: float) -> None:
        """Keep ``ticket`` for ``within_s`` seconds (on the database's clock).

        Raises:
            WriteDenied: the database does not answer (``confirmations_unavailable``).
        """
        dropped = await asyncio.to_thread(self._put, ticket, within_s)
        if dropped:
            if self.dropped == 0:
                logger.warning(
                    "more than %d write confirmations waiting: the oldest are dropped",
                    self._max_pending,
                )
            self.dropped += dropped

    def _take(self, confirmation_id: str) -> tuple[Any, ...] | None:
        key = _digest(confirmation_id)

        def work(con: psycopg.Connection[Any]) -> tuple[Any, ...] | None:
            row = con.execute(_TAKE, [key]).fetchone()
            if row is not None:
                return ("taken", row[0], bool(row[1]))
            spent = con.execute(_SPENT, [key]).fetchone()
            return None if spent is None else ("used", spent[0])

        result: tuple[Any, ...] | None = self._run(work)
        return result

    async def take(self, confirmation_id: str, *, within_s: float) -> Confirmation:
        """The ticket, taken once by whichever server comes first.

        Raises:
            WriteDenied: unknown, used before, or expired; or the database does not answer.
        """
        found = await asyncio.to_thread(self._take, confirmation_id)
        if found is None:
            raise _unknown()
        if found[0] == "used":
            raise _used(str(found[1]))
        ticket = _decode(confirmation_id, str(found[1]))
        if found[2]:
            raise _expired(within_s, ticket.tag.path)
        return ticket

    async def withdraw(self, connector: str) -> None:
        """Forget every unused ticket of ``connector``, whichever server issued it.

        Raises:
            WriteDenied: the database does not answer.
        """
        await asyncio.to_thread(self._run, lambda con: con.execute(_WITHDRAW, [connector]))

    def close(self) -> None:
        """Close the connection."""
        with self._lock:
            if self._con is not None:
                self._con.close()
                self._con = None
