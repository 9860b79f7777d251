"""The one small interface every protocol connector implements.

A connector reads values from equipment and hands them over as a :class:`PointBatch` of
*raw* values (decoded from the wire type, not yet scaled) with qualities and source
timestamps; the shared sampler scales them and applies report-by-exception. A device
that does not answer is an exception (:class:`~shopfloor.errors.ConnectorUnavailable`);
a bad tag is a Bad-quality value.

Two shapes exist: a :class:`Pollable` connector is read one poll group at a time on a
schedule; a :class:`Subscribable` one pushes values as the device or broker sends them.
Neither may block the event loop: blocking libraries run in a thread.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol, runtime_checkable

from shopfloor.config.connectors.base import TagConfig
from shopfloor.edge.mapping import TagSpec
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
    kind: str = ""
    state: HealthState = HealthState.STARTING
    last_error: str | None = None
    reads: int = 0
    points: int = 0
    errors: int = 0
    reconnects: int = 0
    last_read_ms: float = 0.0
    reads_per_s: float = 0.0


@dataclass(frozen=True, slots=True)
class PollGroup:
    """Tags read together on one schedule.

    Attributes:
        name: for logs and health, e.g. ``1s``.
        period_s: how often the group is read.
        paths: the ISA-95 paths of its tags (they turn Bad together when the device dies).
    """

    name: str
    period_s: float
    paths: tuple[str, ...]


class Connector(Protocol):
    """What every connector has.

    Attributes:
        name: unique within an edge; used in logs and health.
        kind: the protocol's registered name (``modbus``, ``opcua`` …).
    """

    name: str
    kind: str

    def tags(self) -> Sequence[TagMeta]:
        """Metadata of every tag known now (subscriptions may discover more later)."""

    def specs(self) -> Sequence[TagSpec]:
        """Scaling and deadband of every configured tag, for the sampler."""

    async def connect(self) -> None:
        """Open the connection (raise ConnectorUnavailable when the device cannot be reached)."""

    async def close(self) -> None:
        """Release the connection. Idempotent; safe after a failed connect."""


@runtime_checkable
class Pollable(Connector, Protocol):
    """A connector read on a schedule, one poll group at a time."""

    def groups(self) -> Sequence[PollGroup]:
        """The poll groups, fixed after construction."""

    async def read(self, group: PollGroup) -> PointBatch:
        """Read one group; raise ConnectorUnavailable when the device does not answer."""


@runtime_checkable
class Writable(Protocol):
    """A connector that can write to equipment, only to tags configured ``writable = true``.

    Nothing writes unless the platform asks (:mod:`shopfloor.edge.writes`), and the
    platform asks only for a connector whose writes an admin enabled (docs/writes.md).
    """

    name: str

    @property
    def allows_writes(self) -> bool:
        """Whether the connector's section says ``allow_writes = true``."""

    def tag_config(self, path: str) -> TagConfig | None:
        """The configuration of the tag at ``path`` (type, scaling, range, ``writable``)."""

    async def write(self, path: str, value: float | int | bool | str) -> None:
        """Write one value in engineering units (or a state label).

        Raises:
            WriteRefused: the tag is not writable, the value does not fit, or the device
                refused it.
            ConnectorUnavailable: the device does not answer.
        """


@runtime_checkable
class Subscribable(Connector, Protocol):
    """A connector whose device or broker pushes values."""

    def subscribe(self) -> AsyncIterator[PointBatch | Sequence[TagMeta]]:
        """Yield batches as they arrive, and lists of newly discovered tags.

        Ends by raising ConnectorUnavailable when the connection is lost; the agent then
        marks the tags Bad, reconnects with backoff and subscribes again.
        """
