"""The server composition root: historian, ingest, live channel, API and web page.

Start-up and shutdown are staged. Stopping waits for the HTTP server to finish the
requests in flight, then commits everything the historian accepted, then closes it, so
Ctrl-C never loses a point that an edge was told was accepted.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import socket
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from importlib import resources
from pathlib import Path
from typing import Any

import uvicorn
from fastapi import FastAPI

from shopfloor import __version__
from shopfloor.config import ShopfloorConfig
from shopfloor.config.models import PostgresHistorianSection
from shopfloor.errors import ConfigError
from shopfloor.model import LiveBatch, PointBatch, TagMeta, now_ns
from shopfloor.runtime.channels import Channel
from shopfloor.runtime.clock import DataClock, SystemClock
from shopfloor.server.alarm_rules import alarm_rules, warn_unpartitioned_monitors, watched
from shopfloor.server.analytics import Calculator, Metric, MetricJob
from shopfloor.server.analytics.anomaly_monitor import AnomalyMonitor
from shopfloor.server.analytics.energy_job import EnergyJob
from shopfloor.server.analytics.energy_service import EnergyService, meters_of
from shopfloor.server.analytics.job import OeeJob
from shopfloor.server.analytics.machines import machines_of
from shopfloor.server.analytics.ownership import AnalyticsOwner, Owns
from shopfloor.server.analytics.pg_store import PgAnalyticsStore
from shopfloor.server.analytics.service import Analytics
from shopfloor.server.analytics.shifts import ShiftCalendar
from shopfloor.server.analytics.spc_monitor import SpcMonitor
from shopfloor.server.analytics.store_base import AnalyticsStorage
from shopfloor.server.api.app import create_app
from shopfloor.server.api.client_cert import ClientCertH11Protocol
from shopfloor.server.api.edge_auth import install_edge_credentials
from shopfloor.server.api.schemas import EdgeStatusIn
from shopfloor.server.assets import AssetModel, load_asset_model
from shopfloor.server.assets.editor import PlantEditor
from shopfloor.server.historian.base import Historian
from shopfloor.server.historian.duckdb import DuckDBHistorian
from shopfloor.server.historian.pg_feed import FeedRoute
from shopfloor.server.historian.postgres import PostgresHistorian
from shopfloor.server.historian.retention_policy import policy_of
from shopfloor.server.historian.rollup import RollupSettings
from shopfloor.server.ingest import EdgeRegistry, Ingestor
from shopfloor.server.ingest.credentials import EdgeCredentials
from shopfloor.server.ingest.mqtt import MqttIngest
from shopfloor.server.ingest.pg_edges import PgEdgeStore, SharedEdges
from shopfloor.server.live_fanout import LiveFanIn, stop_link
from shopfloor.server.plant_watch import announce_plant_change
from shopfloor.server.reports.schedule import ReportScheduler
from shopfloor.server.rules.engine import AlarmEngine, AlarmRule
from shopfloor.server.rules.journal import Journal
from shopfloor.server.rules.notify.dispatcher import Dispatcher
from shopfloor.server.rules.partitions import PartitionMap
from shopfloor.server.rules.pg_journal import PgAlarmJournal
from shopfloor.server.security import AuditLog, Auth
from shopfloor.server.security.offline import shared_place
from shopfloor.server.security.pg_audit import PgAuditStore
from shopfloor.server.security.pg_store import PgSecurityStore
from shopfloor.server.security.secret import load_secret_key
from shopfloor.server.sparkplug_node import PlatformSparkplugNode
from shopfloor.server.uns import UnsPublisher, per_process
from shopfloor.server.web.routes import router as web_router
from shopfloor.server.writes import WRITES_FILE, EquipmentWriter, WriteService, WriteSwitches
from shopfloor.server.writes.confirmations import PgConfirmations
from shopfloor.server.writes.pg_switches import PgWriteSwitches
from shopfloor.server.writes.remote import RemoteWriter
from shopfloor.server.writes.service import MAX_PENDING

logger = logging.getLogger(__name__)

StatusFn = Callable[[], dict[str, Any]]


_RENEW_BEFORE = timedelta(days=30)
"""A server certificate closer to its end than this is warned about at start."""


class _EmbeddedUvicorn(uvicorn.Server):
    """uvicorn without its own signal handlers: the process owner decides when to stop."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def build_historian(
    config: ShopfloorConfig, *, upkeep: bool = True, feed: FeedRoute | None = None
) -> Historian:
    """Create the historian backend the configuration names.

    Args:
        upkeep: run compaction, rollups and retention as configured; an ingest worker
            (:mod:`~shopfloor.server.worker`) leaves them to the server process, so that
            several workers do not all do the same upkeep of one schema.
        feed: a shared PostgreSQL historian copies the points this route asks for into
            the committed-points feed (partitioned alarms, :func:`alarm_partitions`).

    Raises:
        ConfigError: the PostgreSQL password's variable is unset or its file unreadable.
    """
    section = config.historian
    upkeep_args: dict[str, Any] = {
        "compaction_interval_s": section.compaction.interval_s if upkeep else None,
        "compaction_grace_s": section.compaction.grace_s,
        "rollups": RollupSettings(
            enabled=section.rollups.enabled and upkeep,
            interval_s=section.rollups.interval_s,
            grace_s=section.rollups.grace_s,
        ),
        "retention": policy_of(section.retention) if upkeep else None,
    }
    if isinstance(section, PostgresHistorianSection):
        return PostgresHistorian(
            section.connection_string(),
            schema=section.schema_name,
            flush_interval_s=section.flush_interval_s,
            flush_rows=section.flush_rows,
            max_pending_rows=section.max_pending_rows,
            ack_delay_s=section.ack_delay_s,
            ledger_retention_s=section.ledger_retention_s,
            ledger_max_gaps=section.ledger_max_gaps,
            ledger_prune_interval_s=section.ledger_prune_interval_s,
            read_connections=section.read_connections,
            timescale=section.timescale_wanted,
            shared=section.shared,
            feed=feed,
            **upkeep_args,
        )
    return DuckDBHistorian(
        section.path,
        flush_interval_s=section.flush_interval_s,
        flush_rows=section.flush_rows,
        memory_limit=section.memory_limit,
        max_pending_rows=section.max_pending_rows,
        ack_delay_s=section.ack_delay_s,
        ledger_retention_s=section.ledger_retention_s,
        **upkeep_args,
    )


def build_ingestor(
    config: ShopfloorConfig,
    historian: Historian,
    live: Channel[LiveBatch],
    *,
    derive: Callable[[PointBatch], PointBatch] | None = None,
) -> Ingestor:
    """The ingest service over ``historian`` with the configured limits (``[ingest]``);
    ``derive`` adds the calculated points of each batch (the plant's calculations)."""
    ingestor = Ingestor(
        historian,
        live,
        max_future_s=config.ingest.max_future_s,
        max_pending_points=config.ingest.max_pending_points,
        retry_after_s=config.ingest.retry_after_s,
        edges=EdgeRegistry(max_edges=config.ingest.max_edges),
        derive=derive,
    )
    section = config.historian
    if isinstance(section, PostgresHistorianSection) and section.shared:
        ingestor.shared_edges = SharedEdges(  # every process's edges, for every API server
            PgEdgeStore(section.connection_string(), section.schema_name),
            ingestor.edges,
            historian.ledger_stats,
            max_age_s=section.ledger_retention_s,
            max_edges=config.ingest.max_edges,
        )
    return ingestor


def build_mqtt_ingest(
    config: ShopfloorConfig, ingestor: Ingestor, historian: Historian
) -> MqttIngest:
    """The MQTT consumer of ``[ingest.mqtt]``, whether or not ``enabled`` is set."""
    return MqttIngest(
        ingestor,
        config.ingest.mqtt,
        register_tags=historian.register_tags,
        max_body_bytes=config.ingest.max_body_bytes,
        status_model=EdgeStatusIn,
    )


AUDIT_FILE = "audit.sqlite"
"""The audit log of writes through the API, in ``server.data_dir``."""

SECURITY_FILE = "security.sqlite"
"""Users, sessions and API tokens, in ``server.data_dir``."""

BOOTSTRAP_TOKEN_ENV = "SHOPFLOOR_BOOTSTRAP_TOKEN_FILE"
"""Names a file the server writes a new admin API token to at each start (mode 0600):
for automation and tests that start a server and must talk to it (docs/auth.md)."""

DEMO_PLANT = "demo_plant"
"""The packaged demo plant (``plant.toml`` and ``templates/``), simulated by ``shopfloor demo``."""


def asset_files(config: ShopfloorConfig) -> tuple[Path, Path, str | None] | None:
    """The plant file and template folder the server serves, and why they cannot be edited
    through the API (None: they can): the configured plant; the packaged demo plant when
    the simulator runs without one (read-only: it is part of the installed package); None
    without either."""
    section = config.assets
    if section.plant is not None:
        templates = section.templates_dir
        assert templates is not None  # beside the plant file by default
        return section.plant, templates, None
    if config.simulator.enabled:
        with resources.as_file(resources.files("shopfloor") / DEMO_PLANT) as folder:
            return folder / "plant.toml", folder / "templates", DEMO_READ_ONLY
    return None


DEMO_READ_ONLY = (
    "the server runs the packaged demo plant, which is part of the installed software and "
    "not edited: export it (GET /api/v1/assets/export or `shopfloor assets export --out "
    "DIR`), set [assets] plant to the exported plant.toml and restart to edit it"
)


def alarm_partitions(config: ShopfloorConfig, assets: AssetModel | None) -> PartitionMap | None:
    """Every alarm rule in force (:func:`~shopfloor.server.alarm_rules.alarm_rules`: the
    plant's, ``[alarms]``', the SPC charts' and anomaly scores') split into
    ``alarms.partitions`` partitions (None: 0, alarms evaluated in each server process).

    Raises:
        ConfigError: partitions are asked for without a shared PostgreSQL historian.
    """
    count = config.alarms.partitions
    if count == 0:
        return None
    section = config.historian
    if not isinstance(section, PostgresHistorianSection) or not section.shared:
        raise ConfigError(
            "alarms.partitions: alarms evaluated by ingest workers keep their journal in the "
            'shared historian: set historian.kind = "postgres" and historian.shared = true, or '
            "alarms.partitions = 0"
        )
    return PartitionMap(alarm_rules(config, assets), count)


def analytics_owner(config: ShopfloorConfig) -> AnalyticsOwner | None:
    """The leases of this server's share of the machines' analytics (None: with
    ``analytics.partitions = 0`` it runs them for every machine)."""
    section = config.historian
    count = config.analytics.partitions
    if count == 0 or not isinstance(section, PostgresHistorianSection):
        return None  # the configuration refuses partitions without a shared historian
    member = f"{socket.gethostname()}-{os.getpid()}"
    return AnalyticsOwner(section.connection_string(), section.schema_name, count, member=member)


def shared_journal(config: ShopfloorConfig) -> Callable[[], Journal]:
    """Opens the shared alarm journal in the historian's database (PostgreSQL only).

    Raises:
        ConfigError: the historian is not PostgreSQL, or its password cannot be read.
    """
    section = config.historian
    if not isinstance(section, PostgresHistorianSection):
        raise ConfigError('alarms.partitions: needs historian.kind = "postgres"')
    dsn, schema = section.connection_string(), section.schema_name
    return lambda: PgAlarmJournal(dsn, schema)


def shared_analytics_store(config: ShopfloorConfig) -> Callable[[], AnalyticsStorage] | None:
    """Opens the analytics store in a shared PostgreSQL historian's schema, so every API
    server sees the same stored hours and operator reasons (None: the local file)."""
    section = config.historian
    if not isinstance(section, PostgresHistorianSection) or not section.shared:
        return None
    dsn, schema = section.connection_string(), section.schema_name
    return lambda: PgAnalyticsStore(dsn, schema)


def _scaled_out(config: ShopfloorConfig) -> bool:
    """Whether other processes share this one's historian (several API servers, workers)."""
    section = config.historian
    return isinstance(section, PostgresHistorianSection) and section.shared


def shared_state(config: ShopfloorConfig) -> tuple[str, str] | None:
    """Where the API servers of a scaled-out installation share users, sessions, tokens,
    the audit log and the writes switches, as ``(dsn, schema)``; None: in the data folder
    (see :func:`~shopfloor.server.security.offline.shared_place`).

    Raises:
        ConfigError: the historian's password cannot be read.
    """
    place = shared_place(config)
    return None if place is None else (place.dsn, place.schema)


def load_assets(config: ShopfloorConfig) -> AssetModel | None:
    """The asset model the configuration names; the demo plant's when the simulator runs
    without one; None otherwise.

    Raises:
        ConfigError: the plant file or a template is invalid (file and line named).
    """
    files = asset_files(config)
    return None if files is None else load_asset_model(files[0], files[1])


def _write_service(
    config: ShopfloorConfig,
    writers: Sequence[EquipmentWriter],
    monotonic: Callable[[], float],
) -> tuple[RemoteWriter | None, WriteService | None]:
    """Writes to equipment: the in-process connectors' writers, and the edges' through the
    broker with ``[ingest.mqtt] commands``; None without any writer."""
    mqtt = config.ingest.mqtt
    remote = (
        RemoteWriter(mqtt, client_id=mqtt.mqtt_client_id)
        if mqtt.enabled and mqtt.commands
        else None
    )
    every = [*writers, *([remote] if remote else [])]
    if not every:
        return remote, None
    shared = shared_state(config)
    switches = (
        WriteSwitches(config.server.data_dir / WRITES_FILE)
        if shared is None
        else PgWriteSwitches(*shared)
    )
    confirmations = (  # the confirm step may reach another API server than the ask
        None if shared is None else PgConfirmations(*shared, max_pending=MAX_PENDING)
    )
    return remote, WriteService(every, switches, monotonic=monotonic, confirmations=confirmations)


def _security(config: ShopfloorConfig) -> tuple[AuditLog, Auth]:
    """The audit log and the users, sessions and tokens: in the data folder, or shared
    by every API server in the shared PostgreSQL (:func:`shared_state`).

    Raises:
        ConfigError: the secret key is missing or weak (or not given in shared mode).
    """
    shared = shared_state(config)
    data = config.server.data_dir
    audit = AuditLog(
        data / AUDIT_FILE, store=None if shared is None else lambda: PgAuditStore(*shared)
    )
    auth = Auth(
        data / SECURITY_FILE,
        settings=config.security,
        secret_key=load_secret_key(
            data, config.security.secret_key_file, shared=shared is not None
        ),
        store=None if shared is None else lambda: PgSecurityStore(*shared),
    )
    return audit, auth


class Server:
    """One platform process: ``await start()``, ``await serve(stop)``, ``await close()``.

    Args:
        config: the validated configuration (paths already resolved).
        status: extra fields for ``/healthz`` (the demo adds its simulator's figures).
        connectors: health rows of the connectors run in this process.
        data_clock: the time the plant's data is at, in UTC nanoseconds, for the jobs
            that reason about "now" in it (metric windows, remaining useful life): the
            wall clock, except in a demo that replays yesterday faster than real time (its
            simulator's clock).
        writers: the connector side of writes to equipment, for the connectors run in
            this process that can write (none: no writes).
        monotonic: the clock confirmations of writes expire by (tests move it).
    """

    def __init__(
        self,
        config: ShopfloorConfig,
        *,
        status: StatusFn | None = None,
        connectors: Callable[[], list[dict[str, Any]]] | None = None,
        data_clock: Callable[[], int] = now_ns,
        writers: Sequence[EquipmentWriter] = (),
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self._data_clock = data_clock
        self.assets = load_assets(config)
        self.partitions = alarm_partitions(config, self.assets)
        self.historian = build_historian(
            config, feed=None if self.partitions is None else self._feed_route
        )
        self.live: Channel[LiveBatch] = Channel("live", maxsize=256)
        calculations = self.assets.calculations if self.assets else ()
        self.calculator = Calculator(calculations) if calculations else None
        self.ingestor = build_ingestor(config, self.historian, self.live, derive=self._derive)
        metrics = self.assets.metrics if self.assets else ()
        self.metrics = self._metric_job(metrics)
        self._metrics_task: asyncio.Task[None] | None = None
        files = asset_files(config)
        self.plant = (
            None
            if self.assets is None or files is None
            else PlantEditor(
                files[0],
                files[1],
                self.assets,
                read_only=files[2],
                on_change=self._assets_changed,
            )
        )
        self.audit, self.auth = _security(config)
        self.remote_writer, self.writes = _write_service(config, writers, monotonic)
        self.anomaly = self._anomaly_monitor(self.assets)
        self._anomaly_task: asyncio.Task[None] | None = None
        self._rul_task: asyncio.Task[None] | None = None
        # partitioned: the ingest workers evaluate and journal; this process shows
        self.alarms = AlarmEngine(
            self._alarm_rules(self.assets),
            config.server.data_dir / config.alarms.journal
            if self.partitions is None
            else shared_journal(config),
            follow=self.partitions is not None,
        )
        self._alarm_task: asyncio.Task[None] | None = None
        # partitioned: the worker owning an alarm's partition notifies (server/worker.py)
        self.dispatcher = (
            Dispatcher(self.alarms, config.notify)
            if config.notify.channels and self.partitions is None
            else None
        )
        self._notify_task: asyncio.Task[None] | None = None
        self.uns = (
            UnsPublisher(
                per_process(config.uns) if _scaled_out(config) else config.uns,
                self.live,
                alarms=self.alarms.events,
                alarm_tag=self._alarm_tag,
                metadata=self.historian.tags,
            )
            if config.uns.enabled
            else None
        )
        self._uns_task: asyncio.Task[None] | None = None
        self._edges_task: asyncio.Task[None] | None = None
        self.sparkplug_node = (
            PlatformSparkplugNode(config.sparkplug_node, self.live, self.historian.tags)
            if config.sparkplug_node.enabled
            else None
        )
        self._sparkplug_task: asyncio.Task[None] | None = None
        self.spc = (
            SpcMonitor(
                config.analytics.spc,
                self.historian,
                publish=self._publish_spc,
                register_tags=self.historian.register_tags,
                owns=self._owns,
            )
            if config.analytics.spc
            else None
        )
        self._spc_task: asyncio.Task[None] | None = None
        machines = machines_of(self.assets) if self.assets is not None else []
        self.analytics = (
            Analytics(
                self.historian,
                machines,
                config.analytics,
                config.server.data_dir,
                store=shared_analytics_store(config),
            )
            if machines
            else None
        )
        self.oee_job = (
            OeeJob(self.analytics, config.analytics.oee, owns=self._owns)
            if self.analytics is not None and config.analytics.oee.enabled
            else None
        )
        self._oee_task: asyncio.Task[None] | None = None
        meters = meters_of(self.assets, config.analytics.energy) if self.assets is not None else []
        self.energy = (
            EnergyService(self.analytics, meters, config.analytics.energy)
            if self.analytics is not None and meters
            else None
        )
        self.energy_job = (
            EnergyJob(self.energy, config.analytics.oee, owns=self._owns)
            if self.energy is not None and config.analytics.energy.enabled
            else None
        )
        self._energy_task: asyncio.Task[None] | None = None
        self.app: FastAPI = create_app(
            historian=self.historian,
            ingestor=self.ingestor,
            live=self.live,
            version=__version__,
            extra_routers=[web_router],
            status=status,
            connectors=connectors,
            max_body_bytes=config.ingest.max_body_bytes,
            max_request_bytes=config.server.max_request_bytes,
            alarms=self.alarms,
            assets=self.assets,
            plant=self.plant,
            audit=self.audit,
            spc_charts=config.analytics.spc,
            analytics=self.analytics,
            energy=self.energy,
            anomaly=self.anomaly,
            auth=self.auth,
            writes=self.writes,
        )
        self.credentials = (
            EdgeCredentials(config.ingest.edge_credentials)
            if config.ingest.edge_credentials is not None
            else None
        )
        install_edge_credentials(
            self.app,
            self.credentials,
            client_certificates=config.server.tls is not None
            and config.server.tls.client_ca is not None,
        )
        self.mqtt_ingest = (
            build_mqtt_ingest(config, self.ingestor, self.historian)
            if config.ingest.mqtt.enabled
            else None
        )
        mqtt = config.ingest.mqtt
        # scaled out: the workers' live values come through the broker (docs/scale-out.md)
        self.fanin = (
            LiveFanIn(mqtt, self.live, client_id=f"{mqtt.mqtt_client_id}-live")
            if mqtt.live_fanout and not mqtt.enabled
            else None
        )
        self._fanin_task: asyncio.Task[None] | None = None
        self.reports = (
            ReportScheduler(
                config.analytics.reports,
                self.app.state.shopfloor,
                calendar=ShiftCalendar(config.analytics.shifts),
                channels=config.notify.channels,
                log_attempt=self.alarms.log_attempt,
                charts=config.analytics.spc,
                clock=SystemClock(),
            )
            if config.analytics.reports
            else None
        )
        self._reports_task: asyncio.Task[None] | None = None
        self.port: int | None = None
        self._started = False
        self._closed = False

    @functools.cached_property
    def analytics_owner(self) -> AnalyticsOwner | None:
        """Scaled out, the leases of the partitions of machines whose analytics this
        server runs (None: it runs them for every machine)."""
        return analytics_owner(self.config)

    @property
    def _owns(self) -> Owns | None:
        """Which machines' analytics this server runs now (None: all of them)."""
        return None if self.analytics_owner is None else self.analytics_owner.owns

    def _feed_route(self, tag: str) -> Sequence[int]:
        """The partitions wanting ``tag``'s points, under the rules in force."""
        return () if self.partitions is None else self.partitions.route(tag)

    def _derive(self, batch: PointBatch) -> PointBatch:
        """The calculated points of ``batch`` (the calculator may be replaced by an edit)."""
        calculator = self.calculator
        return PointBatch.empty() if calculator is None else calculator.derive(batch)

    async def _ingest_metrics(self, batch: PointBatch) -> None:
        await self.ingestor.ingest(batch, source="metrics")

    def _metric_job(self, metrics: Sequence[Metric]) -> MetricJob | None:
        if not metrics:
            return None
        return MetricJob(metrics, self.historian, self._ingest_metrics, clock=self._data_clock)

    async def _replace_metrics(self, metrics: Sequence[Metric]) -> None:
        """Run ``metrics`` from now on instead of the metrics job's current set."""
        task, self._metrics_task = self._metrics_task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self.metrics = self._metric_job(metrics)
        if self.metrics is not None and self._started and not self._closed:
            self._metrics_task = asyncio.create_task(self.metrics.run(), name="server/metrics")

    async def _assets_changed(self, new: AssetModel, old: AssetModel) -> None:
        """An edit of the plant was accepted: register its new tags with the historian and
        evaluate its alarm rules (beside those of ``[alarms]``) from now on."""
        known = set(old.tags)
        added = [t for t in new.tags if t not in known]
        if added:
            await self.historian.register_tags(added)
        await self.alarms.replace_rules(self._alarm_rules(new))
        if self.partitions is not None:  # the workers evaluate: they reload the plant file
            self.partitions = alarm_partitions(self.config, new)
            section = self.config.historian
            assert isinstance(section, PostgresHistorianSection)  # alarm_partitions checks
            await announce_plant_change(section.connection_string(), section.schema_name)
        if new.calculations != old.calculations:
            # carried inputs start afresh: a calculation waits for its inputs' next values
            self.calculator = Calculator(new.calculations) if new.calculations else None
        if new.metrics != old.metrics:
            await self._replace_metrics(new.metrics)

    def _alarm_rules(self, assets: AssetModel | None) -> list[AlarmRule]:
        """Every alarm rule in force (rebuilt whole when the plant is edited)."""
        return alarm_rules(self.config, assets)

    def _anomaly_monitor(self, assets: AssetModel | None) -> AnomalyMonitor | None:
        """The anomaly and RUL monitor, if either is enabled (the machines are those of
        the plant at start-up; an edit of the plant takes effect at the next start)."""
        section = self.config.analytics
        if assets is None or not (section.anomaly.enabled or section.rul.enabled):
            return None
        indicator = section.rul.indicator
        tags = {t.path for t in assets.tags}
        rul_machines = [
            (m.id, m.path) for m in machines_of(assets) if f"{m.path}/{indicator}" in tags
        ]
        return AnomalyMonitor(
            section.anomaly,
            section.rul,
            watched(self.config, assets),
            rul_machines=rul_machines,
            historian=self.historian,
            publish=self._publish_anomaly,
            register_tags=self.historian.register_tags,
            clock=DataClock(self._data_clock),
            owns=self._owns,
        )

    async def _publish_anomaly(self, batch: PointBatch) -> None:
        await self.ingestor.ingest(batch, source="anomaly")

    async def _publish_spc(self, batch: PointBatch) -> None:
        await self.ingestor.ingest(batch, source="spc")

    def _alarm_tag(self, name: str) -> str | None:
        rule = self.alarms.rule(name)
        return None if rule is None else rule.tag

    async def start(self) -> None:
        """Read the edge credentials and open the historian.

        Raises:
            ConfigError: the credentials file cannot be read.
        """
        if self.credentials is not None:
            await asyncio.to_thread(self.credentials.load)
        self.config.server.data_dir.mkdir(parents=True, exist_ok=True)
        await self.historian.start()
        self._started = True
        warn_unpartitioned_monitors(self.config, self.assets)
        await self._register_derived()
        await self.alarms.start()
        await self.audit.start()
        await self._start_security()
        if self.writes is not None:
            await asyncio.to_thread(self.writes.switches.load)
        self._alarm_task = asyncio.create_task(self.alarms.run(self.live), name="server/alarms")
        await self._start_analytics()
        if self.dispatcher is not None:
            self._notify_task = asyncio.create_task(self.dispatcher.run(), name="server/notify")
        if self.reports is not None:
            self._reports_task = asyncio.create_task(self.reports.run(), name="server/reports")
        if self.uns is not None:
            self._uns_task = asyncio.create_task(self.uns.run(), name="server/uns")
        if self.sparkplug_node is not None:
            self._sparkplug_task = asyncio.create_task(
                self.sparkplug_node.run(), name="server/sparkplug-node"
            )
        if self.metrics is not None:
            self._metrics_task = asyncio.create_task(self.metrics.run(), name="server/metrics")
        if self.mqtt_ingest is not None:
            await self.mqtt_ingest.start()
        if self.remote_writer is not None:
            await self.remote_writer.start()
        if self.fanin is not None:
            self._fanin_task = asyncio.create_task(self.fanin.run(), name="server/live-fanin")
        if self.ingestor.shared_edges is not None:
            self._edges_task = asyncio.create_task(
                self.ingestor.shared_edges.run(), name="server/shared-edges"
            )

    async def _start_analytics(self) -> None:
        """Start the analytics leases (scaled out), stores, hourly jobs and monitors."""
        if self.analytics_owner is not None:
            await self.analytics_owner.start()
        if self.analytics is not None:
            await self.analytics.start()
        if self.oee_job is not None:
            self._oee_task = asyncio.create_task(self.oee_job.run(self.live), name="server/oee")
        if self.energy is not None:
            await self.energy.start()
        if self.energy_job is not None:
            self._energy_task = asyncio.create_task(
                self.energy_job.run(self.live), name="server/energy"
            )
        if self.spc is not None:
            await self.spc.start()
            self._spc_task = asyncio.create_task(self.spc.run(self.live), name="server/spc")
        if self.anomaly is not None:
            await self.anomaly.start()
            if self.anomaly.machines:
                self._anomaly_task = asyncio.create_task(
                    self.anomaly.run(self.live), name="server/anomaly"
                )
            if self.anomaly.rul_machines:
                self._rul_task = asyncio.create_task(self.anomaly.run_rul(), name="server/rul")

    async def _register_derived(self) -> None:
        """Register the calculated tags and metrics: no edge reads them, so their metadata
        comes from the asset model."""
        if self.assets is None:
            return
        derived = {c.path for c in self.assets.calculations}
        derived |= {m.path for m in self.assets.metrics}
        metas = [t for t in self.assets.tags if t.path in derived]
        if metas:
            await self.historian.register_tags(metas)

    async def _start_security(self) -> None:
        """Open the users and tokens; on first start create ``admin`` and show its
        password once; write a bootstrap API token if ``SHOPFLOOR_BOOTSTRAP_TOKEN_FILE``
        asks for one."""
        await self.auth.start()
        password = await self.auth.bootstrap_admin()
        if password is not None:
            # Shown once, on the console only: the log file (and its shipping) never sees it.
            sys.stderr.write(
                "\n  No user existed: created the user 'admin' with the password\n\n"
                f"      {password}\n\n"
                "  It is shown this once and stored hashed only. Log in and change it\n"
                "  (or: shopfloor users passwd admin --data-dir DIR).\n\n"
            )
            sys.stderr.flush()
        token_file = os.environ.get(BOOTSTRAP_TOKEN_ENV)
        if token_file:
            await self._write_bootstrap_token(Path(token_file))

    async def _write_bootstrap_token(self, path: Path) -> None:
        """Create an admin API token and write its secret to ``path`` (0600).

        Raises:
            ConfigError: the file cannot be written.
        """
        _, secret = await self.auth.create_token(
            "bootstrap", role="admin", owner=BOOTSTRAP_TOKEN_ENV, expires_ns=None
        )

        def write() -> None:
            tmp = path.with_name(path.name + ".tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as out:
                out.write(secret + "\n")
            tmp.replace(path)

        try:
            await asyncio.to_thread(write)
        except OSError as err:
            raise ConfigError(f"{BOOTSTRAP_TOKEN_ENV}: cannot write {path}: {err}") from err
        logger.info("wrote an admin API token to %s (%s)", path, BOOTSTRAP_TOKEN_ENV)

    async def register_tags(self, metas: Sequence[TagMeta]) -> None:
        """Accept tag metadata from an in-process edge."""
        await self.historian.register_tags(metas)

    async def ingest_local(self, batch: PointBatch) -> None:
        """Accept a batch from an in-process edge, through the same path as the API."""
        await self.ingestor.ingest(batch, source="local")

    async def serve(self, stop: asyncio.Event, *, ready: asyncio.Event | None = None) -> None:
        """Serve HTTP (HTTPS with ``[server.tls]``) until ``stop`` is set; ``ready`` is set
        once the port is listening.

        Raises:
            ConfigError: the TLS certificate or key cannot be loaded.
        """
        section = self.config.server.tls
        tls = await asyncio.to_thread(section.ssl_context) if section is not None else None
        if section is not None:
            expires = await asyncio.to_thread(section.expires)
            if expires - datetime.now(UTC) < _RENEW_BEFORE:
                logger.warning(
                    "server.tls.cert_file %s expires on %s: issue a new one (shopfloor certs "
                    "issue-server) and restart",
                    section.cert_file,
                    f"{expires:%Y-%m-%d %H:%M}Z",
                )
        sock = _bind(self.config.server.host, self.config.server.port)
        self.port = sock.getsockname()[1]
        server = _EmbeddedUvicorn(
            uvicorn.Config(
                self.app,
                log_level="warning",
                access_log=False,
                lifespan="off",
                ws_max_size=1 << 20,
                timeout_graceful_shutdown=5,
                ssl_context_factory=None if tls is None else lambda _config, _default: tls,
                http=ClientCertH11Protocol,  # puts edges' client certificates into the scope
            )
        )
        serving = asyncio.create_task(server.serve(sockets=[sock]), name="server/http")
        try:
            while not server.started and not serving.done():  # noqa: ASYNC110 - uvicorn offers a flag only
                await asyncio.sleep(0.02)
            if serving.done():
                serving.result()  # raises the start-up error
            logger.info("serving %s", self.url)
            if ready is not None:
                ready.set()
            stop_wait = asyncio.create_task(stop.wait(), name="server/stop-wait")
            await asyncio.wait({serving, stop_wait}, return_when=asyncio.FIRST_COMPLETED)
            stop_wait.cancel()
        finally:
            server.should_exit = True
            await serving
            sock.close()

    @property
    def tls(self) -> bool:
        """Whether the server speaks HTTPS."""
        return self.config.server.tls is not None

    @property
    def url(self) -> str:
        """Where a browser on this machine reaches the server."""
        host = self.config.server.host
        shown = "127.0.0.1" if host in {"0.0.0.0", "", "::"} else host
        return f"{'https' if self.tls else 'http'}://{shown}:{self.port}"

    async def close(self) -> None:
        """Commit everything accepted and release storage. Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self.remote_writer is not None:
            await self.remote_writer.close()
        if self.mqtt_ingest is not None:
            await self.mqtt_ingest.stop()
        await stop_link(self._fanin_task)
        tasks = (
            self._metrics_task,
            self._spc_task,
            self._anomaly_task,
            self._rul_task,
            self._oee_task,
            self._energy_task,
            self._sparkplug_task,
            self._uns_task,
            self._reports_task,
            self._notify_task,
            self._alarm_task,
            self._edges_task,
        )
        for task in tasks:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self.analytics_owner is not None:  # after the jobs: the others take over now
            await self.analytics_owner.close()
        await self.alarms.close()
        await self.audit.close()
        await self.auth.close()
        if self.writes is not None:
            await asyncio.to_thread(self.writes.switches.close)
            await asyncio.to_thread(self.writes.confirmations.close)
        if self.analytics is not None:
            await self.analytics.close()
        if self._started:
            await self.historian.close()
            if self.ingestor.shared_edges is not None:  # the last commits' figures
                await self.ingestor.shared_edges.close()


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP, not 0: accepted sockets inherit it, and asyncio turns Nagle off
    # (TCP_NODELAY) only on sockets that say TCP. With Nagle on, a response written as a
    # TLS record per write waited for the client's delayed ACK: ~40 ms per HTTPS request.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as err:
        sock.close()
        raise OSError(err.errno, f"cannot listen on {host}:{port}: {err.strerror}") from err
    sock.listen(2048)
    sock.setblocking(False)
    return sock
