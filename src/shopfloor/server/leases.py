"""Partitions leased through PostgreSQL session advisory locks, shared fairly between
the processes that want them (scaled out, docs/scale-out.md).

Used by the alarm partitions of the ingest workers (:mod:`~shopfloor.server.rules.
partitioned`) and the analytics partitions of the API servers (:mod:`~shopfloor.server.
analytics.ownership`), each with its own lock classes, so the two sets never meet.

* **a lease** is a session advisory lock ``(lock_class, crc32(namespace/partition))``
  held on the owner's one connection: it lasts exactly as long as that session.
* **a dead owner's leases move within seconds**: PostgreSQL frees a session's locks
  when it sees the socket close — at once for a killed process on a live host; for a
  vanished host the connection has short TCP keepalives and ``tcp_user_timeout`` on
  both ends (:data:`KEEPALIVE_S`). The others look for free partitions every ``poll_s``.
* **balance**: every member holds the member lock ``(member_class, crc32(namespace))``
  in shared mode; their number (``pg_locks``: gone with the process, no heartbeat to
  expire) gives the fair share ``ceil(N / members)``. A member takes free partitions up
  to its share and gives back what it holds beyond it.

:class:`LeaseOwner` runs this on a thread with a blocking psycopg connection and
reconnects after a lost one; a subclass does its partitions' work each round.
"""

from __future__ import annotations

import contextlib
import logging
import math
import threading
import zlib
from typing import Any, Final

import psycopg

__all__ = ["KEEPALIVE_S", "LeaseLost", "LeaseOwner", "Leases", "connect", "lock_key"]

logger = logging.getLogger(__name__)

KEEPALIVE_S: Final = 5
"""TCP keepalive idle time, and ``tcp_user_timeout`` in seconds × 2, of a lease
connection on both ends: a vanished host's partitions are free after about 10 s."""
BACKOFF_S: Final = (0.5, 1.0, 2.0, 5.0)
"""Waits between attempts to connect again, the last repeated."""


def lock_key(text: str) -> int:
    """A non-negative int4 advisory lock key (``pg_locks.objid`` shows it as is)."""
    return zlib.crc32(text.encode()) & 0x7FFFFFFF


def connect(dsn: str, *, application_name: str) -> psycopg.Connection[Any]:
    """An autocommit connection whose death both ends notice within seconds."""
    con = psycopg.connect(
        dsn,
        autocommit=True,
        application_name=application_name[:63],
        connect_timeout=10,
        keepalives=1,
        keepalives_idle=KEEPALIVE_S,
        keepalives_interval=1,
        keepalives_count=3,
        tcp_user_timeout=KEEPALIVE_S * 2000,
    )
    try:
        # the server's side: it frees the locks of a client it no longer hears
        for name, value in (
            ("tcp_keepalives_idle", KEEPALIVE_S),
            ("tcp_keepalives_interval", 1),
            ("tcp_keepalives_count", 3),
            ("tcp_user_timeout", KEEPALIVE_S * 2000),
        ):
            con.execute(f"SET {name} = {int(value)}")
    except BaseException:
        con.close()
        raise
    return con


class LeaseLost(Exception):  # noqa: N818 - reads as what happened
    """What this owner held may be another's now: stop, and take leases again."""


class Leases:
    """The partitions ``0 … partitions-1`` of ``namespace`` as leases of one member.

    Only the owner's thread calls the methods taking a connection; :attr:`held` may be
    read from any thread (it is replaced whole, never changed in place).

    Args:
        namespace: what the partitions are of (the historian's schema): members of one
            namespace share them.
        partitions: how many there are.
        member: this member's name (logged; where it starts looking).
        lock_class: first key of a partition's lock.
        member_class: first key of the member lock.
        what: for log lines: ``alarm``, ``analytics``.

    Raises:
        ValueError: ``partitions`` < 1.
    """

    def __init__(
        self,
        namespace: str,
        partitions: int,
        *,
        member: str,
        lock_class: int,
        member_class: int,
        what: str,
    ) -> None:
        if partitions < 1:
            raise ValueError("partitions must be >= 1")
        self.namespace = namespace
        self.partitions = partitions
        self.member = member
        self.what = what
        self._lock_class = lock_class
        self._member_class = member_class
        self.held: frozenset[int] = frozenset()
        """The partitions held now."""
        self.taken = 0
        """Partitions taken since the start."""
        self.released = 0
        """Partitions given back to balance the shares since the start."""

    def _key(self, part: int | None = None) -> int:
        return lock_key(self.namespace if part is None else f"{self.namespace}/{part}")

    def join(self, con: psycopg.Connection[Any]) -> None:
        """Count this connection among the members (the member lock, shared)."""
        con.execute("SELECT pg_advisory_lock_shared(%s, %s)", [self._member_class, self._key()])

    def members(self, con: psycopg.Connection[Any]) -> int:
        """How many members hold the member lock now (this one included)."""
        row = con.execute(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted "
            "AND database = (SELECT oid FROM pg_database WHERE datname = current_database()) "
            "AND classid = %s AND objid = %s AND objsubid = 2",
            [self._member_class, self._key()],
        ).fetchone()
        return max(1, int(row[0]) if row else 1)

    def rebalance(self, con: psycopg.Connection[Any]) -> None:
        """Take free partitions up to the fair share; give back what is beyond it (the
        caller has committed the work of what it gives back)."""
        n = self.partitions
        fair = math.ceil(n / self.members(con))
        held = set(self.held)
        while len(held) > fair:
            part = max(held)
            con.execute("SELECT pg_advisory_unlock(%s, %s)", [self._lock_class, self._key(part)])
            held.discard(part)
            self.held = frozenset(held)
            self.released += 1
            logger.info("%s partition %d given back (fair share %d)", self.what, part, fair)
        if len(held) >= fair:
            return
        start = lock_key(self.member) % n  # members start looking in different places
        for i in range(n):
            part = (start + i) % n
            if part in held:
                continue
            row = con.execute(
                "SELECT pg_try_advisory_lock(%s, %s)", [self._lock_class, self._key(part)]
            ).fetchone()
            if row and row[0]:
                held.add(part)
                self.held = frozenset(held)
                self.taken += 1
                logger.info("%s partition %d taken by %s", self.what, part, self.member)
                if len(held) >= fair:
                    return

    def leave(self, con: psycopg.Connection[Any]) -> None:
        """Give every lease back at once (a clean stop), not at disconnect."""
        if not con.closed:
            with contextlib.suppress(psycopg.Error):
                con.execute("SELECT pg_advisory_unlock_all()")
        self.held = frozenset()

    def drop(self) -> None:
        """Forget the leases: their connection is gone, and its locks with it."""
        self.held = frozenset()


class LeaseOwner:
    """Holds :class:`Leases` on one connection, on the thread that calls :meth:`run`.

    Each round it rebalances, then calls :meth:`work`; it waits ``poll_s`` after a round
    that left nothing to do. A lost connection (or :class:`LeaseLost`) drops every lease
    and connects again after a backoff. Subclasses override :meth:`prepare`,
    :meth:`work` and :meth:`forget`.

    Args:
        dsn: the database's connection string.
        leases: the leases to hold.
        poll_s: how often free partitions are looked for when idle.
    """

    def __init__(self, dsn: str, leases: Leases, *, poll_s: float = 0.2) -> None:
        self._dsn = dsn
        self.leases = leases
        self.poll_s = poll_s

    @property
    def held(self) -> frozenset[int]:
        """The partitions held now."""
        return self.leases.held

    def prepare(self, con: psycopg.Connection[Any]) -> None:
        """Set a new connection up before it joins (schema, tables)."""

    def work(self, con: psycopg.Connection[Any]) -> bool:
        """Work on the partitions held; True if work was left for the next round at once.

        Raises:
            LeaseLost: another owner took over a partition.
        """
        return False

    def forget(self) -> None:
        """The leases are gone (connection lost, or stopped): drop their state."""

    def stopped(self) -> None:
        """Called once when :meth:`run` returns (log the figures)."""

    # ------------------------------------------------------------------ the thread
    def run(self, stop: threading.Event) -> None:
        """Hold leases and work until ``stop`` is set; connect again after a lost
        connection."""
        what = self.leases.what
        failures = 0
        while not stop.is_set():
            try:
                with self._connect() as con:
                    failures = 0
                    self._serve(con, stop)
            except (psycopg.Error, LeaseLost) as err:
                if self.held:
                    logger.warning(
                        "%s partitions %s lost (%s); taking partitions again",
                        what,
                        sorted(self.held),
                        err,
                    )
                elif failures == 0:
                    logger.warning("%s partitions: database unavailable (%s)", what, err)
            except Exception:  # the owner's supervisor: log, give the partitions up, retry
                logger.exception("%s partitions %s: work failed", what, sorted(self.held))
            else:
                continue
            # the connection is closed: its locks are free for the others meanwhile
            self.leases.drop()
            self.forget()
            stop.wait(BACKOFF_S[min(failures, len(BACKOFF_S) - 1)])
            failures += 1
        self.stopped()

    def _connect(self) -> psycopg.Connection[Any]:
        con = connect(
            self._dsn, application_name=f"shopfloor-{self.leases.what} {self.leases.member}"
        )
        try:
            self.prepare(con)
            self.leases.join(con)
        except BaseException:
            con.close()
            raise
        return con

    def _serve(self, con: psycopg.Connection[Any], stop: threading.Event) -> None:
        try:
            while not stop.is_set():
                self.leases.rebalance(con)
                if not self.work(con):
                    stop.wait(self.poll_s)
        finally:
            if stop.is_set():  # given back at once, not at disconnect
                self.leases.leave(con)
                self.forget()
