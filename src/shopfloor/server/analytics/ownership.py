"""Which machines this API server runs the analytics jobs for (scaled out,
docs/scale-out.md#analytics-across-api-servers).

With ``analytics.partitions = N`` every machine belongs to the partition of its
equipment path, ``crc32(equipment) mod N`` (the alarms' split,
:func:`~shopfloor.server.rules.partitions.partition_of`), and each ``shopfloor server``
on the shared historian leases a fair share of the N partitions through PostgreSQL
advisory locks (:mod:`shopfloor.server.leases`, with lock classes of its own: the API
servers share these, the ingest workers the alarms'). The OEE and energy jobs, the SPC
monitor and the anomaly monitor ask :meth:`AnalyticsOwner.owns` per machine as they go,
so a partition a dead server held is picked up by the survivor's jobs within seconds,
with no restart.

The lease thread does no work on its connection: the jobs write through the historian
and the analytics store as before. While a partition moves, a job step already running
in the server giving it back finishes its machine: hours are replaced whole, so an hour
stored twice holds the same figures; the monitors stop at their next batch.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from typing import Final

from shopfloor.server.leases import LeaseOwner, Leases
from shopfloor.server.pg_locks import ANALYTICS_MEMBER, ANALYTICS_PARTITION
from shopfloor.server.rules.partitions import partition_of

__all__ = ["ANALYTICS_LOCK_CLASS", "ANALYTICS_MEMBER_CLASS", "AnalyticsOwner", "Owns"]

logger = logging.getLogger(__name__)

ANALYTICS_LOCK_CLASS: Final = ANALYTICS_PARTITION
"""First key of an analytics partition's advisory lock."""
ANALYTICS_MEMBER_CLASS: Final = ANALYTICS_MEMBER
"""First key of the member lock every API server with analytics holds shared."""

Owns = Callable[[str], bool]
"""Whether this server runs the analytics of the machine at an equipment path, now."""


class AnalyticsOwner(LeaseOwner):
    """Leases analytics partitions for one API server; run :meth:`run` on a thread.

    Args:
        dsn: the historian's connection string.
        schema_name: the historian's schema (servers of one schema share the partitions).
        partitions: ``analytics.partitions``.
        member: this server's name (logged).
        poll_s: how often free partitions are looked for.
    """

    def __init__(
        self,
        dsn: str,
        schema_name: str,
        partitions: int,
        *,
        member: str,
        poll_s: float = 0.5,
    ) -> None:
        super().__init__(
            dsn,
            Leases(
                schema_name,
                partitions,
                member=member,
                lock_class=ANALYTICS_LOCK_CLASS,
                member_class=ANALYTICS_MEMBER_CLASS,
                what="analytics",
            ),
            poll_s=poll_s,
        )
        self._part: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    async def start(self) -> None:
        """Start leasing on a thread of its own, not one of the loop's executor (the jobs
        own nothing until its first round, a few milliseconds later)."""
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(
                target=self.run, args=(self._stop,), name="server/analytics-leases"
            )
            self._thread.start()

    async def close(self) -> None:
        """Stop and give every lease back at once, so the others take them over now."""
        thread, self._thread = self._thread, None
        if thread is not None:
            self._stop.set()
            await asyncio.to_thread(thread.join)

    def owns(self, equipment: str) -> bool:
        """Whether the machine at ``equipment`` is in a partition held now (see
        :data:`Owns`); called on the event loop, cheap per call."""
        part = self._part.get(equipment)
        if part is None:
            part = self._part[equipment] = partition_of(equipment, self.leases.partitions)
        return part in self.leases.held

    def stopped(self) -> None:
        logger.info(
            "analytics partitions: stopped (%d taken, %d given back)",
            self.leases.taken,
            self.leases.released,
        )
