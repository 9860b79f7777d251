"""Connection health of the connectors: ``/api/v1/connectors``."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel, Field

from shopfloor.server.api.auth import READ
from shopfloor.server.api.context import Ctx

router = APIRouter(prefix="/api/v1", tags=["connectors"], dependencies=[READ])


class ConnectorOut(BaseModel):
    """One connector's state as operators see it."""

    name: str
    kind: str = Field(description="Protocol: modbus, opcua, mqtt, sparkplug, s7, simulator.")
    state: str = Field(description="starting, active, idle, degraded or stopped.")
    last_error: str | None = Field(description="The most recent failure, if any.")
    reads: int = Field(description="Successful reads or deliveries since start.")
    points: int = Field(description="Raw points read since start.")
    errors: int = Field(description="Failed reads or lost connections since start.")
    reconnects: int
    last_read_ms: float = Field(description="Duration of the last read.")
    reads_per_s: float = Field(description="Reads per second over the last 10 s.")


class ConnectorsOut(BaseModel):
    """Every connector this server runs itself."""

    connectors: list[ConnectorOut]


@router.get(
    "/connectors",
    summary="Connector health",
    description="State, last error, read rate and latency of each connector run by this "
    "server process (a single-box install or the demo).",
    response_model=ConnectorsOut,
)
async def list_connectors(ctx: Ctx) -> ConnectorsOut:
    """Health of every in-process connector."""
    rows = ctx.connectors() if ctx.connectors else []
    return ConnectorsOut(connectors=[ConnectorOut.model_validate(r) for r in rows])
