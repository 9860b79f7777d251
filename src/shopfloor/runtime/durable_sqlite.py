"""One way to open the platform's small durable SQLite files (alarm journal, audit log,
stored OEE): WAL with ``synchronous=FULL``, so a row is on disk when its transaction
returns, which is what lets each of them say "written before anybody is told"."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from pathlib import Path

__all__ = ["open_durable"]


def open_durable(path: Path, schema: Iterable[str]) -> sqlite3.Connection:
    """Open (or create, with its folder) the SQLite file at ``path`` in autocommit mode for
    one worker thread, durable per transaction, and run the ``schema`` statements.

    Raises:
        OSError: the folder cannot be made.
        sqlite3.Error: the file cannot be opened, or a schema statement fails.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    con = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    try:
        con.execute("PRAGMA journal_mode=WAL")
        con.execute("PRAGMA synchronous=FULL")
        for statement in schema:
            con.execute(statement)
    except sqlite3.Error:
        con.close()
        raise
    return con
