"""The edge's own health: ``/healthz`` (JSON), ``/metrics`` (Prometheus), status reports.

An operator asks the edge box itself how much it holds and how long it can hold out::

    curl http://edge-box:9180/healthz     # the status document, as JSON
    curl http://edge-box:9180/metrics     # the same figures as shopfloor_edge_* metrics

and the platform learns the same every ``status_interval`` through
``PUT /api/v1/edges/{id}/status`` (docs/wire.md), which answers with the measured clock
skew. An older platform without that endpoint answers 404: logged once, then ignored.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import socket
from collections.abc import Awaitable, Callable, Iterator, Mapping
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from shopfloor.runtime.clock import Clock, SystemClock

from .uplink.http import Answer, Verdict

__all__ = [
    "METRICS_MEDIA_TYPE",
    "EdgeMonitor",
    "HealthServer",
    "StatusReporter",
    "create_health_app",
    "edge_status",
    "render_metrics",
    "wire_status",
]

logger = logging.getLogger(__name__)

METRICS_MEDIA_TYPE = "text/plain; version=0.0.4; charset=utf-8"

StatusFn = Callable[[], Mapping[str, Any]]


def edge_status(
    uplink: Any,
    *,
    connectors: Callable[[], list[dict[str, Any]]] | None = None,
    clock: Clock | None = None,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The status document of docs/wire.md for an :class:`OutboxUplink` and its connectors.

    Args:
        uplink: the :class:`~shopfloor.edge.uplink.forwarder.OutboxUplink`.
        connectors: health rows of the connectors (``dataclasses.asdict`` of each
            :class:`~shopfloor.edge.connectors.base.ConnectorHealth`).
        clock: for ``edge_time_ns``.
        extra: more top-level fields (the measured skew, …).
    """
    now = (clock or SystemClock()).now_ns()
    doc: dict[str, Any] = {"edge": uplink.edge_id, "edge_time_ns": now, **uplink.status()}
    doc["connectors"] = connectors() if connectors is not None else []
    failed = getattr(uplink, "failed", None)
    doc["state"] = "failed" if failed is not None else _state(doc)
    if failed is not None:
        doc["error"] = str(failed)
    if extra:
        doc.update(extra)
    return doc


WIRE_STATUS_KEYS = ("edge_time_ns", "buffer", "uplink", "connectors")
"""The top-level keys of the status report in docs/wire.md (the platform allows no others)."""


def wire_status(doc: Mapping[str, Any]) -> dict[str, Any]:
    """The part of :func:`edge_status` that the platform's status endpoint takes."""
    return {key: doc[key] for key in WIRE_STATUS_KEYS if key in doc}


def _state(doc: Mapping[str, Any]) -> str:
    buffer = doc.get("buffer", {})
    uplink = doc.get("uplink", {})
    if buffer.get("full") or uplink.get("down") or not buffer.get("open", True):
        return "degraded"
    return "ok"


# ------------------------------------------------------------------ metrics
_GAUGES: tuple[tuple[str, str, str, str], ...] = (
    ("buffer", "batches", "buffer_batches", "Batches waiting in the outbox."),
    ("buffer", "points", "buffer_points", "Points waiting in the outbox."),
    ("buffer", "bytes", "buffer_bytes", "Bytes the waiting batches take on disk."),
    ("buffer", "max_bytes", "buffer_max_bytes", "Configured outbox size bound."),
    ("buffer", "oldest_age_s", "buffer_oldest_age_seconds", "Age of the oldest waiting batch."),
    ("buffer", "hours_left", "buffer_hours_left", "Hours until full at the recent rate."),
    ("buffer", "disk_free_bytes", "buffer_disk_free_bytes", "Free space on the outbox disk."),
    ("buffer", "append_rate_bps", "buffer_append_bytes_per_second", "Recent append rate."),
    ("buffer", "full", "buffer_full", "1 while the outbox or its disk is full."),
    ("buffer", "next_seq", "buffer_next_seq", "Sequence number of the next batch."),
    ("uplink", "send_rate_pps", "uplink_send_points_per_second", "Points acknowledged per s."),
    ("uplink", "ack_latency_ms_p50", "uplink_ack_latency_p50_ms", "Median commit latency."),
    ("uplink", "ack_latency_ms_p99", "uplink_ack_latency_p99_ms", "99th pct commit latency."),
    ("uplink", "down", "uplink_down", "1 while the platform is unreachable."),
)
_COUNTERS: tuple[tuple[str, str, str, str], ...] = (
    ("buffer", "appended_points", "buffer_appended_points_total", "Points appended."),
    ("buffer", "acked_batches", "buffer_acked_batches_total", "Batches committed, ever."),
    ("buffer", "acked_points", "buffer_acked_points_total", "Points committed, ever."),
    ("buffer", "dropped_points", "buffer_dropped_points_total", "Points dropped by a bound."),
    ("buffer", "dropped_batches", "buffer_dropped_batches_total", "Batches dropped."),
    ("buffer", "quarantined_batches", "buffer_quarantined_batches_total", "Quarantined."),
    ("buffer", "corrupt_records", "buffer_corrupt_records_total", "Damaged records skipped."),
    ("buffer", "torn_tails", "buffer_torn_tails_total", "Torn tails truncated on open."),
    ("uplink", "reconnects", "uplink_reconnects_total", "Recoveries after an outage."),
    ("uplink", "requests", "uplink_requests_total", "Batch requests made."),
    ("uplink", "acked_batches", "uplink_acked_batches_total", "Batches committed."),
    ("uplink", "acked_points", "uplink_acked_points_total", "Points committed."),
    ("uplink", "duplicates", "uplink_duplicate_batches_total", "Batches already committed."),
    ("uplink", "refusals", "uplink_refusals_total", "Refusals as invalid."),
    ("uplink", "retry_later", "uplink_retry_later_total", "429/503 answers."),
    ("uplink", "failures", "uplink_failures_total", "Requests without a usable answer."),
)
_CONNECTOR_COUNTERS = (
    ("reads", "connector_reads_total", "Successful reads."),
    ("points", "connector_points_total", "Points read."),
    ("errors", "connector_errors_total", "Failed reads."),
    ("reconnects", "connector_reconnects_total", "Reconnects."),
)


def render_metrics(status: Mapping[str, Any]) -> str:
    """The status document as Prometheus text exposition (``shopfloor_edge_*``)."""
    edge = _label(str(status.get("edge", "")))
    lines: list[str] = []

    def emit(name: str, kind: str, help_text: str, samples: list[tuple[str, float]]) -> None:
        full = f"shopfloor_edge_{name}"
        lines.append(f"# HELP {full} {help_text}")
        lines.append(f"# TYPE {full} {kind}")
        for labels, value in samples:
            lines.append(f"{full}{{{labels}}} {_number(value)}")

    emit(
        "up",
        "gauge",
        "1 unless the edge has failed (fail-stop).",
        [(f'edge="{edge}"', 0.0 if status.get("state") == "failed" else 1.0)],
    )
    for table, kind in ((_GAUGES, "gauge"), (_COUNTERS, "counter")):
        for section, key, name, help_text in table:
            value = status.get(section, {}).get(key)
            if value is None:
                continue
            emit(name, kind, help_text, [(f'edge="{edge}"', float(value))])
    skew = status.get("clock_skew_s")
    if skew is not None:
        emit(
            "clock_skew_seconds",
            "gauge",
            "Platform time minus edge time.",
            [(f'edge="{edge}"', float(skew))],
        )
    connectors = list(status.get("connectors", []))
    if connectors:
        rows = [
            (_connector_labels(edge, c), 1.0 if c.get("state") == "active" else 0.0)
            for c in connectors
        ]
        emit("connector_up", "gauge", "1 while the connector reads.", rows)
        for key, name, help_text in _CONNECTOR_COUNTERS:
            emit(
                name,
                "counter",
                help_text,
                [(_connector_labels(edge, c), float(c.get(key, 0))) for c in connectors],
            )
    return "\n".join(lines) + "\n"


def _connector_labels(edge: str, row: Mapping[str, Any]) -> str:
    name = _label(str(row.get("name", "")))
    kind = _label(str(row.get("kind", "")))
    return f'edge="{edge}",connector="{name}",kind="{kind}"'


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return str(int(value)) if value.is_integer() else repr(value)


# ---------------------------------------------------------------------- app
def create_health_app(status: StatusFn) -> Starlette:
    """A tiny app: ``/healthz`` (JSON; 503 once failed) and ``/metrics`` (Prometheus)."""

    async def healthz(request: Request) -> Response:
        doc = dict(status())
        return JSONResponse(doc, status_code=503 if doc.get("state") == "failed" else 200)

    async def metrics(request: Request) -> Response:
        return PlainTextResponse(render_metrics(status()), media_type=METRICS_MEDIA_TYPE)

    return Starlette(routes=[Route("/healthz", healthz), Route("/metrics", metrics)])


class _QuietUvicorn(uvicorn.Server):
    """uvicorn without its own signal handlers: the edge process decides when to stop."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class HealthServer:
    """Serves the health app on ``host:port`` (port 0 picks a free one; see :attr:`port`).

    Args:
        app: from :func:`create_health_app`.
        host: address to bind.
        port: TCP port.
    """

    def __init__(self, app: Starlette, *, host: str = "127.0.0.1", port: int = 9180) -> None:
        self._app = app
        self._host = host
        self._want_port = port
        self.port: int | None = None
        self._server: _QuietUvicorn | None = None
        self._task: asyncio.Task[None] | None = None
        self._sock: socket.socket | None = None

    async def start(self) -> None:
        """Bind and serve in the background.

        Raises:
            OSError: the port is taken (the message says which).
        """
        family = socket.AF_INET6 if ":" in self._host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self._host, self._want_port))
        except OSError as err:
            sock.close()
            raise OSError(
                err.errno, f"health endpoint cannot bind {self._host}:{self._want_port}: {err}"
            ) from err
        sock.listen(64)
        sock.setblocking(False)
        self._sock = sock
        self.port = sock.getsockname()[1]
        self._server = _QuietUvicorn(
            uvicorn.Config(self._app, log_level="warning", access_log=False, lifespan="off")
        )
        self._task = asyncio.create_task(
            self._server.serve(sockets=[sock]), name="edge/health-http"
        )
        while not self._server.started and not self._task.done():  # noqa: ASYNC110 - uvicorn offers a flag only
            await asyncio.sleep(0.01)
        if self._task.done():
            self._task.result()
        logger.info("edge health on http://%s:%d/healthz and /metrics", self._host, self.port)

    async def stop(self) -> None:
        """Stop serving."""
        if self._server is not None:
            self._server.should_exit = True
        if self._task is not None:
            await self._task
            self._task = None
        if self._sock is not None:
            self._sock.close()
            self._sock = None


class StatusReporter:
    """PUTs the edge's status to the platform every ``interval_s`` (and after reconnects).

    Args:
        put: sends one status document (``HttpTransport.put_status``).
        status: builds the document.
        interval_s: time between reports.
        reconnects: returns the uplink's reconnect count; a change triggers a report.
    """

    def __init__(
        self,
        put: Callable[[Mapping[str, Any]], Awaitable[Answer]],
        status: StatusFn,
        *,
        interval_s: float = 10.0,
        reconnects: Callable[[], int] | None = None,
    ) -> None:
        self._put = put
        self._status = status
        self._interval_s = interval_s
        self._reconnects = reconnects
        self.skew_s: float | None = None
        self.reports = 0
        self._unsupported_logged = False

    async def run(self) -> None:
        """Report until cancelled."""
        seen = self._reconnects() if self._reconnects else 0
        while True:
            await self.report_once()
            waited = 0.0
            while waited < self._interval_s:
                step = min(1.0, self._interval_s - waited)
                await asyncio.sleep(step)
                waited += step
                now = self._reconnects() if self._reconnects else 0
                if now != seen:
                    seen = now
                    break

    async def report_once(self) -> Answer:
        """Send one report and remember the platform's skew estimate."""
        answer = await self._put(wire_status(self._status()))
        if answer.committed:
            self.reports += 1
            skew = (answer.body or {}).get("skew_s")
            if isinstance(skew, int | float):
                self.skew_s = float(skew)
        elif answer.status in (404, 405) and not self._unsupported_logged:
            self._unsupported_logged = True
            logger.info(
                "the platform does not take edge status reports (HTTP %d): an older version; "
                "reports continue in case it is upgraded",
                answer.status,
            )
        elif answer.verdict is Verdict.REFUSED:
            logger.debug("status report refused: %s", answer.detail[:200])
        return answer


class EdgeMonitor:
    """The edge's health endpoints and status reports together, for the composition root.

    Args:
        uplink: the :class:`~shopfloor.edge.uplink.forwarder.OutboxUplink`.
        put_status: sends one report (``HttpTransport.put_status``); None: no reports.
        connectors: health rows of the connectors.
        host: address of ``/healthz`` and ``/metrics``.
        port: their port (0: a free one; see :attr:`port`); None: no endpoints.
        interval_s: time between status reports.
    """

    def __init__(
        self,
        uplink: Any,
        *,
        put_status: Callable[[Mapping[str, Any]], Awaitable[Answer]] | None = None,
        connectors: Callable[[], list[dict[str, Any]]] | None = None,
        host: str = "127.0.0.1",
        port: int | None = 9180,
        interval_s: float = 10.0,
    ) -> None:
        self._uplink = uplink
        self._connectors = connectors
        self.reporter = (
            None
            if put_status is None
            else StatusReporter(
                put_status,
                self.status,
                interval_s=interval_s,
                reconnects=lambda: int(uplink.sender.stats().reconnects),
            )
        )
        self.server = (
            None
            if port is None
            else HealthServer(create_health_app(self.status), host=host, port=port)
        )
        self._task: asyncio.Task[None] | None = None

    def status(self) -> dict[str, Any]:
        """The full status document (what ``/healthz`` shows)."""
        skew = self.reporter.skew_s if self.reporter is not None else None
        return edge_status(
            self._uplink,
            connectors=self._connectors,
            extra={"clock_skew_s": skew} if skew is not None else None,
        )

    @property
    def port(self) -> int | None:
        """The port the endpoints listen on."""
        return self.server.port if self.server is not None else None

    async def start(self) -> None:
        """Serve the endpoints and start reporting."""
        if self.server is not None:
            await self.server.start()
        if self.reporter is not None:
            self._task = asyncio.create_task(self.reporter.run(), name="edge/status-report")

    async def stop(self) -> None:
        """Stop reporting and serving."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self.server is not None:
            await self.server.stop()
