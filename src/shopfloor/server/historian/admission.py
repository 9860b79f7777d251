"""What both historians share in front of their writer: lifecycle and the pending bound.

A historian accepts points faster than it can commit them only up to a bound (house
rule 2: bound every queue). Beyond it, writers wait (the policy is backpressure: the
ingest path answers 429/503 while it waits, nothing is dropped), and the first wait and
the drain are logged once each. The DuckDB historian releases rows from its writer
thread and the PostgreSQL one from its writer task; both end in :meth:`Admission.release`
on the event loop.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from enum import Enum

from shopfloor.errors import HistorianError, PayloadError, ShutdownError

__all__ = ["Admission", "State", "check_ack_key", "require_running"]

logger = logging.getLogger(__name__)


class State(Enum):
    """Where a historian is in its life: NEW → STARTING → RUNNING → CLOSING → CLOSED."""

    NEW = "new"
    STARTING = "starting"
    RUNNING = "running"
    CLOSING = "closing"
    CLOSED = "closed"


def require_running(state: State) -> None:
    """Raise unless a historian in ``state`` takes reads and writes.

    Raises:
        HistorianError: not started yet.
        ShutdownError: closing or closed.
    """
    if state is State.RUNNING:
        return
    if state is State.NEW:
        raise HistorianError("the historian is not started")
    raise ShutdownError("the historian is closed")


def check_ack_key(edge: str, seq: int) -> None:
    """Raise for an ``(edge, seq)`` the ingest ledger cannot key.

    Raises:
        PayloadError: ``edge`` is empty or ``seq`` is below 1.
    """
    if not edge:
        raise PayloadError("edge", "must not be empty")
    if seq < 1:
        raise PayloadError("seq", f"must be 1 or more, got {seq}")


class Admission:
    """Counts points accepted but not yet committed; :meth:`reserve` waits beyond the bound.

    Args:
        max_pending: the most points pending at once; a single larger batch is still
            admitted when nothing else is pending (it could never fit otherwise).
        state: returns the historian's state; a writer woken by a close gets ShutdownError.
    """

    def __init__(self, max_pending: int, *, state: Callable[[], State]) -> None:
        self.max_pending = max_pending
        self.pending = 0
        self.waits = 0
        """How often a writer had to wait for room."""
        self._state = state
        self._waiters: list[asyncio.Future[None]] = []
        self._logged = False

    async def reserve(self, n: int) -> None:
        """Wait until ``n`` more points fit under the bound, then count them in.

        Raises:
            ShutdownError: the historian closed while this waited.
        """
        while self.pending and self.pending + n > self.max_pending:
            self.waits += 1
            if not self._logged:
                self._logged = True
                logger.warning(
                    "historian write queue full (%d points pending): writers wait", self.pending
                )
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            await waiter
            require_running(self._state())
        self.pending += n

    def unreserve(self, n: int) -> None:
        """Give back room reserved for a write that was never handed to the writer."""
        self.pending -= n

    def release(self, n: int) -> None:
        """``n`` points stopped being pending (committed, or dropped by a failed commit)."""
        self.pending -= n
        if self.pending == 0 and self._logged:
            self._logged = False
            logger.info("historian write queue drained")
        self.wake_all()

    def wake_all(self) -> None:
        """Wake every waiting writer (room was freed, or the historian is closing)."""
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)
