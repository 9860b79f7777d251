"""Edits of the plant reach the ingest workers while they run (scaled out).

An API server edits the plant file (``/api/v1/assets``, :mod:`~.assets.editor`) and
applies the edit in its own process; the workers evaluating the alarms
(``alarms.partitions``) read the same plant file — the path in the file every process is
started with, on a disk they share (docs/scale-out.md). After each accepted edit the API
server sends a PostgreSQL ``NOTIFY`` on :data:`PLANT_CHANNEL` with the historian's schema
as payload (:func:`announce_plant_change`); each worker ``LISTEN``\\ s
(:class:`PlantWatch`) and reloads the plant file, then swaps its rules in without losing
the state of the alarms whose rule stayed.

A notification is not stored: one sent while a worker was not listening (it was
restarting, or its connection was lost) would be missed, so the watch also reloads each
time it (re)starts listening; the reload compares and does nothing when nothing changed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Final

import psycopg
from psycopg import sql

from shopfloor.errors import ShopfloorError
from shopfloor.runtime.backoff import Backoff

__all__ = ["PLANT_CHANNEL", "PlantWatch", "announce_plant_change"]

logger = logging.getLogger(__name__)

PLANT_CHANNEL: Final = "shopfloor_plant"
"""The PostgreSQL notification channel; the payload is the historian's schema."""


async def announce_plant_change(dsn: str, schema_name: str) -> bool:
    """Tell the workers of ``schema_name`` that the plant file changed; False (logged) if
    the database could not be reached: the edit stands, the workers take it at their
    next start or reconnection."""
    try:
        async with await psycopg.AsyncConnection.connect(
            dsn, autocommit=True, connect_timeout=10, application_name="shopfloor-plant"
        ) as con:
            await con.execute("SELECT pg_notify(%s, %s)", [PLANT_CHANNEL, schema_name])
    except psycopg.Error as err:
        logger.warning(
            "plant edit saved, but the ingest workers were not told (%s): they read it "
            "when they next start or reconnect",
            err,
        )
        return False
    return True


class PlantWatch:
    """Calls ``reload`` whenever an API server announces an edit of the plant.

    Args:
        dsn: the historian's connection string.
        schema_name: the historian's schema (notifications for other schemas are ignored).
        reload: re-reads the plant and applies what changed (idempotent); a
            :class:`~shopfloor.errors.ShopfloorError` it raises (an invalid file) is logged
            and the running rules stay.
    """

    def __init__(self, dsn: str, schema_name: str, reload: Callable[[], Awaitable[None]]) -> None:
        self._dsn = dsn
        self._schema = schema_name
        self._reload = reload
        self.reloads = 0
        """Reloads asked for (notifications and (re)connections)."""

    async def run(self) -> None:
        """Listen until cancelled; connect again (with backoff) when the database goes."""
        backoff = Backoff(initial=0.5, maximum=10.0)
        lost = False
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(
                    self._dsn,
                    autocommit=True,
                    connect_timeout=10,
                    application_name="shopfloor-plant-watch",
                ) as con:
                    await con.execute(sql.SQL("LISTEN {}").format(sql.Identifier(PLANT_CHANNEL)))
                    if lost:
                        logger.info("plant watch: listening again")
                    lost = False
                    backoff.reset()
                    await self._apply()  # what was announced while nobody listened
                    async for note in con.notifies():
                        if note.payload == self._schema:
                            await self._apply()
            except psycopg.Error as err:
                if not lost:
                    logger.warning("plant watch: database lost (%s); reconnecting", err)
                lost = True
            await asyncio.sleep(backoff.next_delay())

    async def _apply(self) -> None:
        self.reloads += 1
        try:
            await self._reload()
        except ShopfloorError as err:
            logger.error("plant edit not applied (the running rules stay): %s", err)
