"""The outbox in SQLite (WAL, ``synchronous=FULL``): the measured alternative.

Kept behind the same :class:`~shopfloor.edge.buffer.base.LogStore` protocol so the two
can be compared in one run (``bench/outbox.py``) and chosen by configuration
(``[buffer] store = "sqlite"``). SQLite brings its own torn-write protection (the WAL's
checksummed frames); a database it reports as corrupt on open is moved aside, counted and
replaced by an empty one, so the edge never crash-loops on it.

On a full disk SQLite cannot delete rows either (every write, a delete included, needs
room in the WAL), so this store cannot make room by dropping: appends wait until space
is freed, whatever the policy.

Sequence numbers live in the ``meta`` table (``high``, updated in the same transaction
as the rows), so they survive restarts and deletes and are never reused.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import sqlite3
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from shopfloor.edge.buffer.base import (
    CorruptRecord,
    Durability,
    OutboxFailed,
    RecordSink,
    Recovery,
    StorageUnavailable,
)

__all__ = ["SqliteLog"]

logger = logging.getLogger(__name__)

_SQLITE_FULL = 13
_SQLITE_IOERR = 10
_SQLITE_CORRUPT = 11
_SQLITE_NOTADB = 26
_OVERHEAD = 64
"""Rough bytes per row beyond the payload (row header, index entry), for the size bound."""


class SqliteLog:
    """A :class:`~shopfloor.edge.buffer.base.LogStore` in one SQLite database (WAL mode).

    Args:
        directory: the outbox directory; the database is ``outbox.sqlite`` in it.
        durability: ``fsync`` is ``synchronous=FULL``; ``none`` is ``synchronous=OFF``.
    """

    record_overhead = _OVERHEAD

    def __init__(self, directory: Path, *, durability: Durability = Durability.FSYNC) -> None:
        self.directory = Path(directory)
        self.path = self.directory / "outbox.sqlite"
        self.durability = durability
        self._db: sqlite3.Connection | None = None
        self._pending_done: list[int] = []
        self._failed: OutboxFailed | None = None

    def open(self, sink: RecordSink) -> Recovery:
        """Open (or create) the database; move a corrupt one aside and start empty."""
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise StorageUnavailable(
                f"cannot use outbox directory {self.directory}: {err.strerror}", errno=err.errno
            ) from err
        corrupt = 0
        try:
            db = self._connect()
            check = db.execute("PRAGMA quick_check").fetchone()
            if check is None or check[0] != "ok":
                raise sqlite3.DatabaseError(f"quick_check: {check}")
        except sqlite3.DatabaseError as err:
            if _code(err) not in (_SQLITE_CORRUPT, _SQLITE_NOTADB, None) and not str(
                err
            ).startswith("quick_check"):
                raise self._translate("open", err) from err
            aside = self.path.with_name(f"outbox.sqlite.corrupt-{time.time_ns()}")
            logger.error("outbox database %s is corrupt (%s): moved to %s", self.path, err, aside)
            for suffix in ("", "-wal", "-shm"):
                src = Path(str(self.path) + suffix)
                if src.exists():
                    src.rename(Path(str(aside) + suffix))
            corrupt = 1
            db = self._connect()
        self._db = db
        counters = {k: int(v) for k, v in db.execute("SELECT key, value FROM counters")}
        if corrupt:
            counters["corrupt_records"] = counters.get("corrupt_records", 0) + corrupt
            self._save_counters(counters)
        high = db.execute("SELECT value FROM meta WHERE key = 'high'").fetchone()
        for seq, appended_ns, points, size in db.execute(
            "SELECT seq, appended_ns, points, length(payload) FROM batches ORDER BY seq"
        ):
            sink(seq, seq, size + _OVERHEAD, points, appended_ns)
        next_seq = (int(high[0]) if high else 0) + 1
        return Recovery(next_seq=next_seq, floor=1, counters=counters, corrupt_records=corrupt)

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        sync = "FULL" if self.durability is Durability.FSYNC else "OFF"
        db.execute(f"PRAGMA synchronous={sync}")
        db.executescript(
            "CREATE TABLE IF NOT EXISTS batches(seq INTEGER PRIMARY KEY, "
            "appended_ns INTEGER NOT NULL, points INTEGER NOT NULL, payload BLOB NOT NULL);"
            "CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value INTEGER NOT NULL);"
            "CREATE TABLE IF NOT EXISTS counters(key TEXT PRIMARY KEY, value INTEGER NOT NULL);"
        )
        return db

    def append(
        self, items: Sequence[tuple[bytes, int]], *, appended_ns: int
    ) -> list[tuple[int, int, int]]:
        """Insert the rows and move ``high`` in one transaction (one sync in FULL mode)."""
        if self._failed is not None:
            raise self._failed
        db = self._require()
        try:
            db.execute("BEGIN IMMEDIATE")
            row = db.execute("SELECT value FROM meta WHERE key = 'high'").fetchone()
            first = (int(row[0]) if row else 0) + 1
            db.executemany(
                "INSERT INTO batches VALUES (?, ?, ?, ?)",
                [(first + i, appended_ns, n, p) for i, (p, n) in enumerate(items)],
            )
            last = first + len(items) - 1
            db.execute("INSERT OR REPLACE INTO meta VALUES ('high', ?)", (last,))
            db.execute("COMMIT")
        except sqlite3.Error as err:
            if db.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    db.execute("ROLLBACK")
            raise self._translate("append", err) from err
        return [(first + i, first + i, len(p) + _OVERHEAD) for i, (p, _) in enumerate(items)]

    def read(self, seq: int, loc: int, size: int) -> bytes:
        """Return one row's payload."""
        try:
            row = (
                self._require()
                .execute("SELECT payload FROM batches WHERE seq = ?", (seq,))
                .fetchone()
            )
        except sqlite3.DatabaseError as err:
            raise CorruptRecord(f"record {seq}: {err}") from err
        if row is None:
            raise CorruptRecord(f"record {seq} is missing")
        payload: bytes = row[0]
        return payload

    def mark_done(self, records: Iterable[tuple[int, int]]) -> None:
        """Remember rows to delete at the next checkpoint."""
        self._pending_done.extend(seq for seq, _ in records)

    def checkpoint(
        self, *, floor: int, done: Sequence[tuple[int, int]], counters: Mapping[str, int]
    ) -> None:
        """Delete the done rows and save the counters in one transaction."""
        db = self._require()
        try:
            db.execute("BEGIN IMMEDIATE")
            db.executemany("DELETE FROM batches WHERE seq = ?", [(s,) for s in self._pending_done])
            db.executemany("INSERT OR REPLACE INTO counters VALUES (?, ?)", list(counters.items()))
            db.execute("COMMIT")
        except sqlite3.Error as err:
            if db.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    db.execute("ROLLBACK")
            raise self._translate("checkpoint", err) from err
        self._pending_done.clear()

    def _save_counters(self, counters: Mapping[str, int]) -> None:
        db = self._require()
        db.executemany("INSERT OR REPLACE INTO counters VALUES (?, ?)", list(counters.items()))

    def oldest_unit(self) -> tuple[int, int] | None:
        """None: on a full disk SQLite cannot delete either (the WAL needs free pages).

        So under ``drop-oldest`` a full disk makes appends wait, as under ``stop-reading``,
        until space is freed (measured; one reason the segment log is the default).
        """
        return None

    def disk_free(self) -> int:
        """Free bytes on the database's file system."""
        try:
            st = os.statvfs(self.directory)
        except OSError:
            return 0
        return st.f_bavail * st.f_frsize

    def close(self) -> None:
        """Checkpoint the WAL into the database and close it."""
        if self._db is not None:
            try:
                self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            except sqlite3.Error as err:
                logger.warning("outbox: WAL checkpoint on close failed: %s", err)
            self._db.close()
            self._db = None

    def abandon(self) -> None:
        """Close without checkpointing the WAL, as a killed process would (tests)."""
        if self._db is not None:
            self._db.close()
            self._db = None

    def _require(self) -> sqlite3.Connection:
        if self._db is None:
            raise StorageUnavailable("the outbox database is not open")
        return self._db

    def _translate(self, what: str, err: sqlite3.Error) -> Exception:
        code = _code(err)
        if code == _SQLITE_FULL or "disk is full" in str(err):
            return StorageUnavailable(f"outbox {what}: {err}", errno=errno.ENOSPC)
        if code == _SQLITE_IOERR or "disk I/O error" in str(err):
            self._failed = OutboxFailed(f"outbox {what}: {err}; stopping")
            return self._failed
        return StorageUnavailable(f"outbox {what}: {err}")


def _code(err: sqlite3.Error) -> int | None:
    code = getattr(err, "sqlite_errorcode", None)
    return None if code is None else int(code) & 0xFF
