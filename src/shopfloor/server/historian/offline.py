"""The historian opened by a command (export, import, backup, restore) beside the server.

A historian has one writer: the DuckDB file is locked by the process that has it open,
and a PostgreSQL schema by its writer's advisory lock. A command therefore works while
the server is stopped, and when it is not, it says so in words a user can act on
(:class:`ServerRunning`) instead of passing on "Could not set lock on file".
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from psycopg.conninfo import conninfo_to_dict, make_conninfo

from shopfloor.config import ShopfloorConfig
from shopfloor.config.models import PostgresHistorianSection
from shopfloor.errors import HistorianError
from shopfloor.server.historian.base import Historian

__all__ = ["HistorianTarget", "ServerRunning", "explain_open_failure", "opened", "target_of"]

_DUCKDB_LOCK = "Could not set lock on file"
_DUCKDB_PID = re.compile(r"Conflicting lock is held in .*?\(PID (\d+)\)")


class ServerRunning(HistorianError):  # noqa: N818 - reads as the condition it reports
    """The server (or another command) holds the historian; stop it first."""


@dataclass(frozen=True, slots=True)
class HistorianTarget:
    """Where a configuration keeps its history, as backup and restore need it.

    Attributes:
        backend: ``duckdb`` or ``postgres``.
        path: the DuckDB file (duckdb).
        dsn: the libpq connection string without the password (postgres).
        password: the password from the configuration, if it names one (postgres).
        schema: the historian's schema (postgres).
    """

    backend: Literal["duckdb", "postgres"]
    path: Path | None = None
    dsn: str = ""
    password: str | None = None
    schema: str = ""

    def describe(self) -> str:
        """Where the history is, for messages (never the password)."""
        if self.backend == "duckdb":
            return str(self.path)
        return f"PostgreSQL schema {self.schema} ({self.dsn})"


def target_of(config: ShopfloorConfig) -> HistorianTarget:
    """Where ``config`` (paths resolved) keeps its history.

    Raises:
        ConfigError: the PostgreSQL password's variable is unset or its file unreadable.
    """
    section = config.historian
    if isinstance(section, PostgresHistorianSection):
        params = conninfo_to_dict(section.connection_string())
        password = params.pop("password", None)
        return HistorianTarget(
            "postgres",
            dsn=make_conninfo("", **params),
            password=None if password is None else str(password),
            schema=section.schema_name,
        )
    return HistorianTarget("duckdb", path=section.path)


def explain_open_failure(err: BaseException, target: HistorianTarget) -> BaseException:
    """Turn "the storage is locked" into :class:`ServerRunning`; return others unchanged."""
    text = " ".join(str(e) for e in _chain(err))
    if target.backend == "duckdb":
        if _DUCKDB_LOCK not in text:
            return err
        found = _DUCKDB_PID.search(text)
        holder = f"process {found.group(1)}" if found else "another process"
        message = (
            f"the server is running: {holder} has {target.path} open; stop it (or, to read "
            "history while it runs, use its HTTP API) and run this command again"
        )
    elif "another historian already writes" in text:
        message = (
            f"the server is running: it writes to schema {target.schema} of this database; "
            "stop it and run this command again"
        )
    else:
        return err
    running = ServerRunning(message)
    running.__cause__ = err
    return running


def _chain(err: BaseException) -> list[BaseException]:
    out: list[BaseException] = []
    seen: BaseException | None = err
    while seen is not None and seen not in out:
        out.append(seen)
        seen = seen.__cause__ or seen.__context__
    return out


@contextlib.asynccontextmanager
async def opened(historian: Historian, target: HistorianTarget) -> AsyncIterator[Historian]:
    """Start ``historian`` (built from the configuration) for a command; close it after.

    Raises:
        ServerRunning: the server has the historian open.
        HistorianError: the historian cannot be opened otherwise.
    """
    try:
        await historian.start()
    except HistorianError as err:
        explained = explain_open_failure(err, target)
        if explained is err:
            raise
        raise explained from err
    try:
        yield historian
    finally:
        await historian.close()
