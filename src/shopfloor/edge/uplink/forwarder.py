"""Store and forward: the :class:`~shopfloor.edge.uplink.base.Uplink` the edge agent uses.

:class:`OutboxUplink` keeps the agent's two calls and changes what they mean:

* ``send(batch)`` returns once the batch is **durable in the outbox** (not once the
  platform has it). Under ``stop-reading`` with a full outbox, or on a full disk, it
  waits — and so do the connectors' poll loops that called it.
* ``announce(tags)`` queues metadata; the sender PUTs it before the next batch.

A :class:`~shopfloor.edge.uplink.sender.Sender` drains the outbox in the background.
If the outbox can no longer promise durability (an fsync failed), ``send`` raises
:class:`~shopfloor.edge.buffer.base.OutboxFailed` and :meth:`OutboxUplink.wait_failed`
returns: the composition root must stop the process (fail-stop).

Example::

    uplink = build_outbox_uplink(config)
    await uplink.start()
    agent = EdgeAgent(connectors, uplink)
    ...
    await uplink.close()
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping, Sequence
from typing import Any

from shopfloor.config.durations import parse_duration_s
from shopfloor.config.edge import EdgeConfig
from shopfloor.edge.buffer.base import (
    Durability,
    FullPolicy,
    LogStore,
    OutboxError,
    StorageUnavailable,
)
from shopfloor.edge.buffer.outbox import DurableOutbox
from shopfloor.edge.buffer.payload import encode_payload
from shopfloor.edge.buffer.quarantine import Quarantine
from shopfloor.edge.buffer.segments import SegmentLog
from shopfloor.edge.buffer.sqlite import SqliteLog
from shopfloor.errors import ShutdownError
from shopfloor.model import PointBatch, TagMeta
from shopfloor.runtime.backoff import Backoff
from shopfloor.runtime.clock import Clock, SystemClock
from shopfloor.runtime.supervisor import Supervisor

from .http import Answer, HttpTransport
from .sender import BatchTransport, Sender, SenderOptions

__all__ = ["OutboxUplink", "build_outbox", "build_outbox_uplink"]

logger = logging.getLogger(__name__)


class OutboxUplink:
    """Durable append on ``send``, background drain to the platform.

    Args:
        outbox: the buffer (not opened yet: :meth:`start` opens it, retrying).
        transport: how batches travel.
        edge_id: this edge's identity.
        quarantine: where refused batches go.
        options: the drain policy.
        clock: injected for tests.
        retry: first and longest wait between attempts to open an unusable outbox.
    """

    def __init__(
        self,
        outbox: DurableOutbox,
        transport: BatchTransport,
        *,
        edge_id: str,
        quarantine: Quarantine | None = None,
        options: SenderOptions | None = None,
        clock: Clock | None = None,
        retry: tuple[float, float] = (0.5, 10.0),
    ) -> None:
        self.outbox = outbox
        self.transport = transport
        self.edge_id = edge_id
        self.quarantine = quarantine
        self.sender = Sender(
            outbox,
            transport,
            edge_id=edge_id,
            quarantine=quarantine,
            options=options,
            clock=clock or SystemClock(),
        )
        self._retry = retry
        self._supervisor = Supervisor("uplink")
        self._ready = asyncio.Event()
        self._failed_event = asyncio.Event()
        self._fatal: OutboxError | None = None
        self._started = False
        self._closed = False
        outbox.add_listener(self._check_failed)

    # -------------------------------------------------------------- lifecycle
    async def start(self) -> None:
        """Open the outbox (in the background if the disk is not usable yet) and drain it."""
        if self._started:
            return
        self._started = True
        start = getattr(self.transport, "start", None)
        if start is not None:  # a transport with a connection of its own (MQTT)
            await start()
        self._supervisor.start("open", self._open, restart=False)

    async def _open(self) -> None:
        backoff = Backoff(initial=self._retry[0], maximum=self._retry[1])
        logged = False
        while True:
            try:
                await self.outbox.open()
                break
            except StorageUnavailable as err:
                if not logged:
                    logger.error("outbox cannot be opened: %s; retrying until it can", err)
                    logged = True
                await asyncio.sleep(backoff.next_delay())
            except OutboxError as err:  # another process owns it: nothing to wait for
                logger.critical("%s", err)
                self._fatal = err
                self._failed_event.set()
                return
        if logged:
            logger.info("outbox opened")
        self._ready.set()
        self._supervisor.start("sender", self.sender.run)

    async def close(self, *, drain_s: float = 0.0) -> None:
        """Stop sending (after up to ``drain_s`` to empty the outbox), then close everything.

        Batches not yet acknowledged stay in the outbox for the next start.
        """
        if self._closed:
            return
        self._closed = True
        if drain_s > 0 and self._ready.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._drained(), drain_s)
        await self._supervisor.stop()
        await self.outbox.close()
        close = getattr(self.transport, "close", None)
        if close is not None:
            await close()

    async def wait_ready(self) -> None:
        """Wait until the outbox is open (it may wait for a disk to become usable)."""
        await self._ready.wait()

    async def _drained(self) -> None:
        while self.outbox.stats().batches:  # noqa: ASYNC110 - acks have no event of their own
            await asyncio.sleep(0.05)

    # ---------------------------------------------------------------- Uplink
    async def announce(self, tags: Sequence[TagMeta]) -> None:
        """Queue tag metadata for the platform (sent before the next batch)."""
        self.sender.announce(tags)

    async def send(self, batch: PointBatch) -> None:
        """Make ``batch`` durable in the outbox; the sender takes it from there.

        Raises:
            OutboxFailed: durability can no longer be promised; stop the edge.
            ShutdownError: the uplink is closed.
        """
        if self._closed:
            raise ShutdownError("the uplink is closed")
        if self._fatal is not None:
            raise self._fatal
        if not self._ready.is_set():
            ready = asyncio.create_task(self._ready.wait(), name="uplink/wait-ready")
            failed = asyncio.create_task(self._failed_event.wait(), name="uplink/wait-failed")
            try:
                await asyncio.wait({ready, failed}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                ready.cancel()
                failed.cancel()
            if self._fatal is not None:
                raise self._fatal
        if not len(batch):
            return
        await self.outbox.append(encode_payload(batch), points=len(batch))

    async def put_status(self, status: Mapping[str, Any]) -> Answer:
        """Report the edge's status through the transport (for the status reporter)."""
        return await self.transport.put_status(status)

    # ------------------------------------------------------------ fail-stop
    def _check_failed(self) -> None:
        if self.outbox.failed is not None and self._fatal is None:
            self._fatal = self.outbox.failed
            self._failed_event.set()

    async def wait_failed(self) -> OutboxError:
        """Return (never raise) the error that must stop the edge, once there is one."""
        await self._failed_event.wait()
        assert self._fatal is not None
        return self._fatal

    @property
    def failed(self) -> OutboxError | None:
        """The fail-stop error, if any."""
        return self._fatal

    # ---------------------------------------------------------------- status
    @property
    def points_sent(self) -> int:
        """Points the platform acknowledged since start."""
        return self.sender.stats().acked_points

    def status(self) -> dict[str, Any]:
        """Buffer and uplink figures in the shape of the status report (docs/wire.md)."""
        b = self.outbox.stats()
        s = self.sender.stats()
        return {
            "buffer": {
                "batches": b.batches,
                "points": b.points,
                "bytes": b.bytes,
                "oldest_age_s": round(b.oldest_age_s, 3),
                "hours_left": None if b.hours_left is None else round(b.hours_left, 2),
                "dropped_points": b.dropped_points,
                "dropped_batches": b.dropped_batches,
                "quarantined_batches": b.quarantined_batches,
                "corrupt_records": b.corrupt_records,
                "torn_tails": b.torn_tails,
                "policy": b.policy,
                "full": b.full,
                "storage_error": b.storage_error,
                "max_bytes": b.max_bytes,
                "disk_free_bytes": b.disk_free_bytes,
                "append_rate_bps": round(b.append_rate_bps, 1),
                "appended_points": b.appended_points,
                "acked_batches": b.acked_batches,
                "acked_points": b.acked_points,
                "next_seq": b.next_seq,
                "open": self._ready.is_set(),
            },
            "uplink": {
                "send_rate_pps": round(s.send_rate_pps, 1),
                "ack_latency_ms_p50": _round(s.ack_latency_ms_p50),
                "ack_latency_ms_p99": _round(s.ack_latency_ms_p99),
                "reconnects": s.reconnects,
                "requests": s.requests,
                "acked_batches": s.acked_batches,
                "acked_points": s.acked_points,
                "duplicates": s.duplicates,
                "historical_batches": s.historical_batches,
                "refusals": s.refusals,
                "retry_later": s.retry_later,
                "failures": s.failures,
                "down": s.down,
                "last_error": s.last_error,
            },
        }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


def build_outbox(config: EdgeConfig, *, clock: Clock | None = None) -> DurableOutbox:
    """The outbox the configuration describes (``[buffer]``); not opened yet."""
    section = config.buffer
    durability = Durability(section.durability)
    store: LogStore
    if section.store == "sqlite":
        store = SqliteLog(config.outbox_dir, durability=durability)
    else:
        store = SegmentLog(
            config.outbox_dir, durability=durability, segment_bytes=section.segment_bytes
        )
    return DurableOutbox(
        store,
        max_bytes=section.max_bytes,
        max_age_s=section.max_age_s,
        policy=FullPolicy(section.full_policy),
        clock=clock,
    )


def build_outbox_uplink(config: EdgeConfig, *, clock: Clock | None = None) -> OutboxUplink:
    """The store-and-forward uplink the configuration describes (``[uplink]``, ``[buffer]``).

    ``uplink.transport`` picks the transport: HTTP to ``uplink.url`` (with the edge's
    token and ``ca_file``), or MQTT through the broker in ``[uplink.mqtt]``
    (:class:`~.mqtt.MqttTransport`).

    Raises:
        ConfigError: the token's variable is unset or its file or the CA file unreadable.
    """
    up = config.uplink
    transport: BatchTransport
    if up.transport == "mqtt":
        from .mqtt import MqttTransport  # aiomqtt only when it is used

        transport = MqttTransport(
            up.mqtt,
            edge_id=config.edge.id,
            timeout_s=parse_duration_s(up.timeout),
            compression=up.compression,
            clock=clock,
        )
    else:
        token = up.token()
        if token is not None and up.url.startswith("http://"):
            logger.warning(
                "uplink: the edge's token travels in clear text to %s: use an https:// url",
                up.url,
            )
        transport = HttpTransport(
            up.url,
            edge_id=config.edge.id,
            timeout_s=parse_duration_s(up.timeout),
            compression=up.compression,
            clock=clock,
            token=token,
            ssl_context=up.ssl_context(),
        )
    options = SenderOptions(
        window=up.window,
        catch_up_after_s=parse_duration_s(up.catch_up_after),
        coalesce_points=up.coalesce_points,
        max_refusals=up.max_refusals,
        retry=(
            min(parse_duration_s(up.retry_min), parse_duration_s(up.retry_max)),
            parse_duration_s(up.retry_max),
        ),
    )
    return OutboxUplink(
        build_outbox(config, clock=clock),
        transport,
        edge_id=config.edge.id,
        quarantine=Quarantine(config.outbox_dir / "quarantine"),
        options=options,
        clock=clock,
    )
