"""The API's app factory: routes, one error envelope, the websocket fan-out.

:func:`create_app` only wires what it is given; the server composition root builds the
historian, ingestor and live channel and owns their lifecycle (start and close).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from fastapi import APIRouter, FastAPI

from shopfloor.config.spc import SpcChartConfig
from shopfloor.model import LiveBatch, now_ns
from shopfloor.runtime.channels import Channel
from shopfloor.server.analytics.anomaly_monitor import AnomalyMonitor
from shopfloor.server.analytics.energy_service import EnergyService
from shopfloor.server.analytics.service import Analytics
from shopfloor.server.api.audit_trail import AuditMiddleware
from shopfloor.server.api.auth import AuthenticateEarly, install_auth
from shopfloor.server.api.body_limit import DEFAULT_MAX_REQUEST_BYTES, BodyLimit
from shopfloor.server.api.context import ApiContext
from shopfloor.server.api.denial_audit import DenialAudit
from shopfloor.server.api.errors import install_error_handlers
from shopfloor.server.api.openapi import declare_common_errors
from shopfloor.server.api.routes import alarms as alarms_routes
from shopfloor.server.api.routes import analytics as analytics_routes
from shopfloor.server.api.routes import anomaly as anomaly_routes
from shopfloor.server.api.routes import assets as assets_routes
from shopfloor.server.api.routes import audit as audit_routes
from shopfloor.server.api.routes import auth as auth_routes
from shopfloor.server.api.routes import connectors as connectors_routes
from shopfloor.server.api.routes import edges, health, history, ingest, tags, values, values_at
from shopfloor.server.api.routes import energy as energy_routes
from shopfloor.server.api.routes import reports as reports_routes
from shopfloor.server.api.routes import spc as spc_routes
from shopfloor.server.api.routes import storage as storage_routes
from shopfloor.server.api.routes import users as users_routes
from shopfloor.server.api.routes import writes as writes_routes
from shopfloor.server.api.ws import LiveHub
from shopfloor.server.api.ws import router as ws_router
from shopfloor.server.assets import AssetModel
from shopfloor.server.assets.editor import PlantEditor
from shopfloor.server.historian.base import Historian
from shopfloor.server.ingest import Ingestor
from shopfloor.server.rules.engine import AlarmEngine
from shopfloor.server.security import AuditLog, Auth
from shopfloor.server.security.headers import SecurityHeaders
from shopfloor.server.writes import WriteService
from shopfloor.wire import DEFAULT_MAX_BYTES

__all__ = ["create_app"]

_DESCRIPTION = """\
REST and websocket API of a shopfloor server.

* Times are ISO 8601 in UTC (`2026-01-01T08:00:00.000Z`). Query parameters also take
  offsets (`+01:00`), times without an offset (read as UTC) and times relative to now
  (`now`, `-1h`, `now-15m`).
* Every route but `/healthz` and the login needs a credential: the session cookie of
  `POST /api/v1/auth/login` (then send the session's CSRF token as `X-CSRF-Token` with
  every POST, PUT, PATCH and DELETE), or `Authorization: Bearer <API token>`. No
  credential: `401`; a role without the route's permission: `403` (docs/auth.md).
* Every error answer has the shape `{"error": {"code", "field", "message"}}`; `field`
  names the parameter or payload field at fault. A store that is unavailable (the
  historian, the analytics store, the security store or the audit log, e.g. while the
  shared PostgreSQL restarts) is `503` `unavailable` naming it, with `Retry-After`.
* Live values stream over the websocket `/api/v1/ws`: a `snapshot` frame on connect,
  then `values` frames at most every 250 ms; send `{"type": "subscribe", "prefix": ...}`
  to narrow them to an asset.
* Edges deliver batches to `POST /api/v1/ingest` and report their status to
  `PUT /api/v1/edges/{edge_id}/status` (the contract is docs/wire.md). A batch with an
  edge and a sequence number is answered after it is committed, and stored once however
  often it is sent; `429`/`503` with `Retry-After` mean "send again later".
"""

_TAGS_METADATA = [
    {"name": "tags", "description": "Tags, their metadata and their history."},
    {"name": "values", "description": "The latest value of each tag."},
    {"name": "history", "description": "Many tags' history as one flat table (Grafana)."},
    {"name": "ingest", "description": "Batches of points from edges and scripts."},
    {"name": "edges", "description": "Remote edges: their status, clock skew and delivery."},
    {
        "name": "assets",
        "description": "The plant's ISA-95 asset tree from its templates: edits written back "
        "to the plant file, export as files.",
    },
    {"name": "audit", "description": "Every operator and engineering write, accepted or not."},
    {"name": "alarms", "description": "ISA-18.2 alarms: standing, journal, operator actions."},
    {"name": "spc", "description": "Control charts, run rules and process capability."},
    {
        "name": "analytics",
        "description": "OEE, stop events, downtime Pareto, stop reasons, energy.",
    },
    {"name": "anomaly", "description": "Anomaly scores and remaining useful life."},
    {"name": "auth", "description": "Log in and out; who am I; my password."},
    {"name": "users", "description": "Users and API tokens (admins only)."},
    {
        "name": "writes",
        "description": "Writes to equipment: off per connector until an admin enables them, "
        "asked then confirmed, every attempt audited.",
    },
    {"name": "health", "description": "Liveness and counters."},
]


def create_app(
    *,
    historian: Historian,
    ingestor: Ingestor,
    live: Channel[LiveBatch],
    version: str,
    extra_routers: Sequence[APIRouter] = (),
    status: Callable[[], dict[str, Any]] | None = None,
    connectors: Callable[[], list[dict[str, Any]]] | None = None,
    max_body_bytes: int = DEFAULT_MAX_BYTES,
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
    ws_interval_s: float = 0.25,
    clock: Callable[[], int] = now_ns,
    alarms: AlarmEngine | None = None,
    assets: AssetModel | None = None,
    plant: PlantEditor | None = None,
    audit: AuditLog | None = None,
    spc_charts: Sequence[SpcChartConfig] = (),
    analytics: Analytics | None = None,
    energy: EnergyService | None = None,
    anomaly: AnomalyMonitor | None = None,
    auth: Auth | None = None,
    writes: WriteService | None = None,
) -> FastAPI:
    """Build the FastAPI app.

    Args:
        historian: history and latest values (already started by the caller).
        ingestor: stores and publishes ingested batches.
        live: the channel the ingestor publishes on; each websocket client subscribes to
            it, so its ``maxsize`` bounds every client's backlog.
        version: reported by /healthz and the OpenAPI page.
        extra_routers: more routes (the web pages), mounted after the API's own.
        status: extra keys for /healthz (uptime, edges seen, ...), called per request.
        connectors: health rows of in-process connectors, for /api/v1/connectors.
        max_body_bytes: the largest ingest body accepted (413 beyond).
        max_request_bytes: the largest body of any other request (413 beyond).
        ws_interval_s: the shortest time between two websocket pushes to one client.
        clock: the wall clock in UTC nanoseconds, what ``now`` means in queries.
        alarms: the alarm engine (started by the caller), for ``/api/v1/alarms``.
        assets: the asset model, for ``/api/v1/assets`` (without ``plant``: read-only).
        plant: the plant's editor, for edits and export under ``/api/v1/assets``.
        audit: the audit log (started by the caller): every audited write is recorded in
            it, and ``/api/v1/audit`` reads it.
        spc_charts: the configured control charts, for ``/api/v1/spc/{chart}``.
        analytics: OEE and downtime (started by the caller), for ``/api/v1/oee`` and
            ``/api/v1/downtime``.
        energy: energy per machine, line and shift, for ``/api/v1/energy``.
        anomaly: the anomaly and RUL monitor, for ``/api/v1/anomaly`` and ``/api/v1/rul``.
        auth: users, sessions and API tokens (started and closed by the caller). None: an
            empty in-memory store, so every route but the public ones answers 401 until a
            user or token is added to it (``app.state.auth``; see
            :mod:`shopfloor.testing.auth`).
        writes: writes to equipment, for ``/api/v1/writes`` and the connectors' switches.
    """
    app = FastAPI(
        title="shopfloor",
        version=version,
        description=_DESCRIPTION,
        openapi_tags=_TAGS_METADATA,
        # FastAPI's own pages load Swagger UI / ReDoc from a CDN; the web router serves the
        # reference locally at /docs instead (shopfloor.server.web.routes).
        docs_url=None,
        redoc_url=None,
    )
    app.state.shopfloor = ApiContext(
        historian=historian,
        ingestor=ingestor,
        live=live,
        hub=LiveHub(live, historian, interval_s=ws_interval_s),
        version=version,
        status=status,
        connectors=connectors,
        max_body_bytes=max_body_bytes,
        clock=clock,
        alarms=alarms,
        assets=assets,
        plant=plant,
        audit=audit,
        analytics=analytics,
        energy=energy,
        writes=writes,
    )
    app.state.spc_charts = {chart.name: chart for chart in spc_charts}
    app.state.anomaly = anomaly
    install_auth(app, auth if auth is not None else Auth(None, clock=clock))
    install_error_handlers(app)
    app.add_middleware(
        BodyLimit, max_request_bytes=max_request_bytes, max_edge_bytes=max_body_bytes
    )
    app.add_middleware(SecurityHeaders)
    app.add_middleware(AuthenticateEarly)
    if audit is not None:  # outermost: it sees the envelope of every failure
        app.add_middleware(DenialAudit, log=audit)
        app.add_middleware(AuditMiddleware, log=audit)
    for router in (
        health.router,
        auth_routes.router,
        users_routes.router,
        alarms_routes.router,
        analytics_routes.router,
        energy_routes.router,
        assets_routes.router,
        audit_routes.router,
        connectors_routes.router,
        tags.router,
        values.router,
        values_at.router,
        history.router,
        ingest.router,
        edges.router,
        storage_routes.router,
        spc_routes.router,
        reports_routes.router,
        anomaly_routes.router,
        writes_routes.router,
        ws_router,
    ):
        app.include_router(router)
    for router in extra_routers:
        app.include_router(router)
    declare_common_errors(app)
    return app
