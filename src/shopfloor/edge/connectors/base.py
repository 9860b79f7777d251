"""The one small interface every protocol connector implements.

A connector reads values from equipment and hands them back as a :class:`PointBatch`
with qualities and source timestamps. A device that does not answer is an exception
(:class:`~shopfloor.errors.ConnectorUnavailable`); a bad tag is a Bad-quality value.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from shopfloor.model import PointBatch, TagMeta


class HealthState(StrEnum):
    """Lifecycle of a connector as operators see it."""

    STARTING = "starting"
    ACTIVE = "active"
    IDLE = "idle"
    DEGRADED = "degraded"
    STOPPED = "stopped"


@dataclass(slots=True)
class ConnectorHealth:
    """Counters and state of one connector, for the API and the status line."""

    name: str
    state: HealthState = HealthState.STARTING
    last_error: str | None = None
    reads: int = 0
    points: int = 0
    last_read_ms: float = 0.0


class Connector(Protocol):
    """A polled source of points.

    Attributes:
        name: unique within an edge; used in logs and health.
        poll_period_s: how often :meth:`read` is called.
    """

    name: str
    poll_period_s: float

    def tags(self) -> Sequence[TagMeta]:
        """Metadata of every tag this connector produces."""

    async def connect(self) -> None:
        """Open the connection to the device (may raise ConnectorUnavailable)."""

    async def read(self) -> PointBatch:
        """Read one poll group; raise ConnectorUnavailable when the device does not answer."""

    async def close(self) -> None:
        """Release the connection. Idempotent."""
