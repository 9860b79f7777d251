"""The ingest worker (``shopfloor ingest``): edges' batches from the broker into PostgreSQL.

One platform process (:class:`~shopfloor.server.app.Server`) takes batches, stores them,
raises alarms and serves the API. When one process cannot keep up with the batches,
ingest is scaled out (docs/scale-out.md): N workers take the edges' batches from the
broker through an MQTT 5 shared subscription (``[ingest.mqtt] shared_group``), so the
broker deals each batch to one of them, and all write to one PostgreSQL historian in its
shared mode (``historian.shared``), which stores a batch once whichever worker it reaches
— also when a worker died mid-batch and the batch comes again through another. The API
servers (``shopfloor server`` with ``[ingest.mqtt] enabled = false``) read the same
database.

A worker is that path: historian, :class:`~shopfloor.server.ingest.Ingestor`,
:class:`~shopfloor.server.ingest.mqtt.MqttIngest` — built by the same functions as the
Server's — plus, when configured, its share of the alarm partitions and the live
fan-out to the API servers (:mod:`~shopfloor.server.live_fanout`) and the edges' status
and figures it took, pushed to PostgreSQL for the API servers' ``GET /api/v1/edges``
(:mod:`~shopfloor.server.ingest.pg_edges`); no HTTP, UNS values or Sparkplug. It leaves
the historian's upkeep (compaction, rollups, retention) to the server process: N workers
would otherwise all do the same passes over one schema.

**Shutdown** (SIGTERM or SIGINT): stop taking messages, let the batches being committed
finish and be answered (``[ingest.mqtt] drain_timeout``), commit what the historian
holds, close, exit 0. Messages the broker had not handed over stay in the broker.

**Alarms** (with ``alarms.partitions`` > 0): the worker's historian copies the points
alarm rules read into the committed-points feed in each commit, and a
:class:`~shopfloor.server.rules.partitioned.PartitionOwner` on its own thread owns a fair
share of the alarm partitions and evaluates their feed, journaling in PostgreSQL
(exactly once across workers and kills, see that module). With 0, workers evaluate no
alarms. The owner announces what it journaled (:mod:`~shopfloor.server.worker_alarms`):
the worker sends the notifications (``[notify]``) and publishes the alarm events to the
UNS (``[uns]``, alarm events only: the API servers publish the values) of the partitions
it owns. It follows edits of the plant made through an API server
(:mod:`~shopfloor.server.plant_watch`). The rules are those a single server evaluates
(:mod:`~shopfloor.server.alarm_rules`), SPC and anomaly alarms included: the API server
whose analytics lease covers a chart or machine stores its derived points through the
shared historian, and they reach the feed like any other point.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import threading
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from shopfloor.config import ShopfloorConfig
from shopfloor.config.models import PostgresHistorianSection
from shopfloor.errors import ConfigError
from shopfloor.model import LiveBatch, PointBatch
from shopfloor.runtime.channels import Channel
from shopfloor.runtime.sdnotify import systemd_notifier
from shopfloor.server.alarm_rules import alarm_rules
from shopfloor.server.analytics import Calculator
from shopfloor.server.app import (
    alarm_partitions,
    build_historian,
    build_ingestor,
    build_mqtt_ingest,
    load_assets,
)
from shopfloor.server.live_fanout import LiveFanOut, stop_link
from shopfloor.server.plant_watch import PlantWatch
from shopfloor.server.rules.notify.dispatcher import Dispatcher
from shopfloor.server.rules.partitioned import PartitionOwner
from shopfloor.server.uns import UnsPublisher
from shopfloor.server.worker_alarms import WorkerAlarms

__all__ = ["IngestWorker", "check_worker_config", "run_worker", "worker_client_id"]

logger = logging.getLogger(__name__)

_NOTIFY_DRAIN_S = 5.0
"""How long a stopping worker lets the notifications it journaled be sent."""
_CONNECT_LOG_S = 10.0
"""How long start-up waits for the broker before saying so (it keeps trying)."""


def check_worker_config(config: ShopfloorConfig) -> None:
    """Refuse configurations a worker cannot run with.

    Raises:
        ConfigError: the historian is not PostgreSQL, or not in shared mode.
    """
    section = config.historian
    if not isinstance(section, PostgresHistorianSection):
        raise ConfigError(
            f'historian.kind: shopfloor ingest needs kind = "postgres", not {section.kind!r}: '
            "an embedded DuckDB file belongs to one process, so ingest cannot be spread over "
            "worker processes; run `shopfloor server` with [ingest.mqtt] enabled instead"
        )
    if not section.shared:
        raise ConfigError(
            "historian.shared: shopfloor ingest writes beside other processes (more workers, "
            "the API servers): set shared = true under [historian] in every process's file"
        )


def worker_client_id(config: ShopfloorConfig, override: str | None = None) -> str:
    """The MQTT client id of this worker: ``override`` (``--client-id``), or one made unique
    by host and process id when the sessions do not outlive the connection.

    A worker with a persistent session needs an id that stays the same across its
    restarts: Mosquitto keeps dealing shared messages to a member's session while it is
    away (measured, docs/scale-out.md), so a new id per start would leave an orphan
    session that swallows a share of the batches until it expires.

    Raises:
        ConfigError: several workers would share one id, or an id would change at restart
            while the session is persistent.
    """
    section = config.ingest.mqtt
    if override:
        return override
    if not section.shared_group:
        return section.mqtt_client_id
    if section.session_expiry_s == 0:
        return f"{section.mqtt_client_id}-{socket.gethostname()}-{os.getpid()}"
    raise ConfigError(
        "ingest.mqtt.shared_group: each worker of a shared subscription needs its own client "
        "id; with a persistent session (ingest.mqtt.session_expiry "
        f"{section.session_expiry!r}) it must also stay the same across restarts: start each "
        'worker with --client-id NAME, or set session_expiry = "0s" (see docs/scale-out.md)'
    )


class IngestWorker:
    """One ingest worker: ``await start()``, then ``await close()``.

    Args:
        config: the validated platform configuration (see :func:`check_worker_config`).
        client_id: this worker's MQTT client id (:func:`worker_client_id`).

    Raises:
        ConfigError: see :func:`check_worker_config`.
    """

    def __init__(self, config: ShopfloorConfig, *, client_id: str) -> None:
        check_worker_config(config)
        self.config = config
        section = config.historian
        assert isinstance(section, PostgresHistorianSection)  # check_worker_config
        self.assets = load_assets(config)
        self.partitions = alarm_partitions(config, self.assets)
        self.historian = build_historian(
            config, upkeep=False, feed=None if self.partitions is None else self._route
        )
        self.owner = None
        self.alarm_events: WorkerAlarms | None = None
        self.dispatcher: Dispatcher | None = None
        self.uns: UnsPublisher | None = None
        self.plant_watch: PlantWatch | None = None
        if self.partitions is not None:
            dsn, schema = section.connection_string(), section.schema_name
            self.alarm_events = WorkerAlarms(
                self.partitions, routes=config.notify.routes, dsn=dsn, schema_name=schema
            )
            self.owner = PartitionOwner(
                dsn, schema, self.partitions, member=client_id, announcer=self.alarm_events
            )
            if config.notify.channels:
                self.dispatcher = Dispatcher(
                    self.alarm_events, config.notify, durable_escalations=True
                )
                self.alarm_events.dispatcher = self.dispatcher
            if config.uns.enabled:  # alarm events only: the API servers publish values
                self.uns = UnsPublisher(
                    config.uns.model_copy(update={"client_id": f"{client_id}-uns"}),
                    Channel("uns-values", maxsize=1),  # never fed
                    alarms=self.alarm_events.events,
                    alarm_tag=self.alarm_events.alarm_tag,
                )
            if self.assets is not None:
                self.plant_watch = PlantWatch(dsn, schema, self._reload_plant)
        self._owner_stop = threading.Event()
        self._owner_task: asyncio.Task[None] | None = None
        self._tasks: list[asyncio.Task[None]] = []
        # nobody subscribes in a worker: publishing to no subscriber costs a counter
        self.live: Channel[LiveBatch] = Channel("live", maxsize=16)
        # the plant's calculated tags are part of ingest: a worker computes them too
        self.calculator = (
            Calculator(self.assets.calculations)
            if self.assets and self.assets.calculations
            else None
        )
        self.ingestor = build_ingestor(config, self.historian, self.live, derive=self._derive)
        settings = config.ingest.mqtt.model_copy(update={"client_id": client_id})
        self.mqtt = build_mqtt_ingest(
            config.model_copy(
                update={"ingest": config.ingest.model_copy(update={"mqtt": settings})}
            ),
            self.ingestor,
            self.historian,
        )
        self.fanout = (
            LiveFanOut(settings, self.live, client_id=f"{client_id}-live")
            if settings.live_fanout
            else None
        )
        self._fanout_task: asyncio.Task[None] | None = None
        self._started = False
        self._closed = False

    def _route(self, tag: str) -> Sequence[int]:
        """The feed route of the rules in force (replaced by an edit of the plant)."""
        return () if self.partitions is None else self.partitions.route(tag)

    def _derive(self, batch: PointBatch) -> PointBatch:
        """The calculated points of ``batch`` (the calculator may be replaced by an edit)."""
        calculator = self.calculator
        return PointBatch.empty() if calculator is None else calculator.derive(batch)

    async def _reload_plant(self) -> None:
        """Read the plant file again; apply its alarm rules and calculations if changed.

        Raises:
            ConfigError: the plant file or a template is invalid.
        """
        new = await asyncio.to_thread(load_assets, self.config)
        old = self.assets
        if new is None or old is None:
            return
        self.assets = new
        if new.calculations != old.calculations:
            self.calculator = Calculator(new.calculations) if new.calculations else None
        # the whole rule set: the anomaly alarms follow the machines and tags of the plant
        rules = alarm_rules(self.config, new)
        if rules == alarm_rules(self.config, old):
            return
        partitions = alarm_partitions(self.config, new)
        assert partitions is not None
        assert self.owner is not None
        assert self.alarm_events
        # the route first: points committed from now on feed the new rules' partitions
        self.partitions = partitions
        self.alarm_events.partitions = partitions
        self.owner.replace(partitions)
        logger.info("plant edited: %d alarm rules from now on", len(rules))

    def _start_task(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        self._tasks.append(asyncio.create_task(coro, name=name))

    async def start(self) -> None:
        """Open the historian, then start taking batches (connecting in the background).

        Raises:
            HistorianError: the database cannot be reached or set up.
        """
        await self.historian.start()
        self._started = True
        if self.alarm_events is not None:
            self.alarm_events.bind(asyncio.get_running_loop())
        if self.dispatcher is not None:
            self._start_task(self.dispatcher.run(), "worker/notify")
        if self.uns is not None:
            self._start_task(self.uns.run(), "worker/uns")
        if self.plant_watch is not None:
            self._start_task(self.plant_watch.run(), "worker/plant-watch")
        if self.owner is not None:
            self._owner_task = asyncio.create_task(
                asyncio.to_thread(self.owner.run, self._owner_stop), name="worker/alarm-owner"
            )
        if self.fanout is not None:
            self._fanout_task = asyncio.create_task(self.fanout.run(), name="worker/live-fanout")
        if self.ingestor.shared_edges is not None:  # the API servers list the edges from it
            self._start_task(self.ingestor.shared_edges.run(), "worker/shared-edges")
        await self.mqtt.start()
        settings = self.mqtt.settings
        if not settings.shared_group:
            logger.warning(
                "ingest.mqtt.shared_group is empty: this worker takes every batch, and a "
                "second worker would take them all again"
            )
        if not await self.mqtt.wait_connected(_CONNECT_LOG_S):
            logger.warning("ingest worker: no broker at %s yet; still trying", settings.where)

    async def run(self, stop: asyncio.Event, *, on_ready: Callable[[], None] | None = None) -> None:
        """Start, work until ``stop`` is set, then close (staged, see the module doc).

        ``on_ready`` is called once started (systemd's ``READY=1``, see runtime.sdnotify).
        """
        try:
            await self.start()
            if on_ready is not None:
                on_ready()
            await stop.wait()
            logger.info("ingest worker: stopping")
        finally:
            await self.close()

    async def close(self) -> None:
        """Stop taking messages, answer the batches in flight, commit, close. Idempotent."""
        if self._closed:
            return
        self._closed = True
        await self.mqtt.stop()
        await stop_link(self._fanout_task)
        if self._owner_task is not None:  # after the last commit it could evaluate
            self._owner_stop.set()
            await self._owner_task
        # the owner's announcements were scheduled on this loop before its task ended
        if self.dispatcher is not None and not await self.dispatcher.drain(_NOTIFY_DRAIN_S):
            logger.warning(
                "ingest worker: notifications still unsent after %g s are dropped",
                _NOTIFY_DRAIN_S,
            )
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self.alarm_events is not None:
            await self.alarm_events.close()
        if self._started:
            await self.historian.close()
            if self.ingestor.shared_edges is not None:  # the last commits' figures
                await self.ingestor.shared_edges.close()
        stats = self.mqtt.stats()
        logger.info(
            "ingest worker: %d batches committed (%d duplicates), %d refused, %d busy, %d failed",
            stats.committed,
            stats.duplicates,
            stats.refused,
            stats.busy,
            stats.failed,
        )


async def run_worker(
    config: ShopfloorConfig, *, client_id: str, stop: asyncio.Event | None = None
) -> None:
    """Run one worker until SIGTERM or SIGINT (or ``stop``), then shut it down in stages.

    Raises:
        ConfigError: see :func:`check_worker_config`.
        HistorianError: the database cannot be reached or set up.
    """
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        async with systemd_notifier() as notifier:
            await IngestWorker(config, client_id=client_id).run(
                stop, on_ready=lambda: notifier.ready(f"ingest worker {client_id}")
            )
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
