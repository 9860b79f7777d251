"""What every route needs, handed over once by :func:`~.app.create_app`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, cast

from fastapi import Depends
from starlette.requests import HTTPConnection

from shopfloor.model import LiveBatch
from shopfloor.runtime.channels import Channel
from shopfloor.server.historian.base import Historian
from shopfloor.server.ingest import Ingestor

if TYPE_CHECKING:
    from shopfloor.server.analytics.energy_service import EnergyService
    from shopfloor.server.analytics.service import Analytics
    from shopfloor.server.api.ws import LiveHub
    from shopfloor.server.assets import AssetModel
    from shopfloor.server.assets.editor import PlantEditor
    from shopfloor.server.rules.engine import AlarmEngine
    from shopfloor.server.security import AuditLog
    from shopfloor.server.writes import WriteService

__all__ = ["ApiContext", "Ctx", "get_context"]


@dataclass(frozen=True, slots=True)
class ApiContext:
    """The server parts the API talks to, and its settings.

    Attributes:
        historian: history and latest values.
        ingestor: where ingested batches go.
        live: the channel of freshly ingested batches.
        hub: the websocket fan-out.
        version: the server's version, for /healthz.
        status: extra keys for /healthz, supplied by the composition root.
        connectors: health rows of the connectors this process runs, if any.
        max_body_bytes: the largest ingest body accepted.
        clock: the wall clock in UTC nanoseconds ("now" in queries).
        alarms: the alarm engine, if this server runs one.
        assets: the plant's asset model, if configured, as loaded at start (the edited
            one is ``plant.model``).
        plant: the plant's editor (model now served, edits, export), if configured.
        audit: the audit log of writes, if kept.
        analytics: OEE and downtime, if the plant has machines with states.
        energy: energy per machine, line and shift, if any equipment has energy tags.
        writes: writes to equipment through the connectors this process runs, if any
            can write.
    """

    historian: Historian
    ingestor: Ingestor
    live: Channel[LiveBatch]
    hub: LiveHub
    version: str
    status: Callable[[], dict[str, Any]] | None
    connectors: Callable[[], list[dict[str, Any]]] | None
    max_body_bytes: int
    clock: Callable[[], int]
    alarms: AlarmEngine | None = None
    assets: AssetModel | None = None
    plant: PlantEditor | None = None
    audit: AuditLog | None = None
    analytics: Analytics | None = None
    energy: EnergyService | None = None
    writes: WriteService | None = None


def get_context(conn: HTTPConnection) -> ApiContext:
    """FastAPI dependency: the context stored on the app (works for HTTP and websockets)."""
    return cast(ApiContext, conn.app.state.shopfloor)


Ctx = Annotated[ApiContext, Depends(get_context)]
"""Route parameter type that injects the :class:`ApiContext`."""
