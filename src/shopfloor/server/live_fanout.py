"""Live values of a scaled-out installation through the broker (docs/scale-out.md).

An ingest worker's batches reach its own live channel only; the API servers' websocket
hubs (and their OEE, energy, SPC jobs) read *their* live channel. With
``[ingest.mqtt] live_fanout = true``:

* every ``shopfloor ingest`` worker runs a :class:`LiveFanOut`: each batch on its live
  channel goes to ``{root}/live/{edge}`` as one message (Arrow IPC, zstd — the wire
  format, :mod:`shopfloor.wire`), QoS 0, not retained;
* every ``shopfloor server`` that does not consume ingest itself runs a :class:`LiveFanIn`
  subscribed to ``{root}/live/+``, which puts each batch on its live channel, exactly as if
  it had ingested it.

No process memory is shared: any API server behind any load balancer shows every
worker's values. QoS 0 because live values are a view, not a record (history and alarms
come from PostgreSQL): a message lost with a broker restart is a value a screen shows a
second later with the next one. Both ends are bounded: the publisher reads a
drop-oldest subscription of the live channel, the subscriber publishes into one.
Batches are published when accepted, before the commit, as a single server's live
channel does (:mod:`~shopfloor.server.ingest.service`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from dataclasses import dataclass

import aiomqtt

from shopfloor.config.ingest_mqtt import MqttIngestSection
from shopfloor.errors import PayloadError
from shopfloor.model import LiveBatch
from shopfloor.runtime.backoff import Backoff
from shopfloor.runtime.channels import Channel, Subscription
from shopfloor.wire import ARROW_MEDIA_TYPE, compress, decode, encode_arrow

__all__ = ["LiveFanIn", "LiveFanOut", "LiveFanStats", "live_filter", "live_topic", "stop_link"]

logger = logging.getLogger(__name__)

_ENCODING = "zstd"
_MAX_BYTES = 16 * 1024 * 1024


def live_topic(settings: MqttIngestSection, edge: str | None) -> str:
    """``{root}/live/{edge}`` (``_`` for points of no edge: scripts, calculations)."""
    return f"{settings.topic_root}/live/{edge or '_'}"


def live_filter(settings: MqttIngestSection) -> str:
    """``{root}/live/+``: every worker's live batches."""
    return f"{settings.topic_root}/live/+"


@dataclass(slots=True)
class LiveFanStats:
    """Counters of one end."""

    connected: bool = False
    batches: int = 0
    """Published (fan-out) or received and put on the live channel (fan-in)."""
    dropped: int = 0
    """Not published while the broker was away (fan-out), or undecodable (fan-in)."""
    reconnects: int = 0


def _client(settings: MqttIngestSection, client_id: str) -> aiomqtt.Client:
    return aiomqtt.Client(
        settings.host,
        settings.broker_port,
        username=settings.username,
        password=settings.password(),
        identifier=client_id,
        protocol=aiomqtt.ProtocolVersion.V5,
        clean_start=True,
        keepalive=settings.keepalive_s,
        tls_context=settings.ssl_context() if settings.tls is not None else None,
        tls_insecure=True if settings.tls is not None and settings.tls.insecure else None,
    )


class _Link:
    """Connect, serve, reconnect with backoff; the transitions logged once."""

    def __init__(self, settings: MqttIngestSection, client_id: str, what: str) -> None:
        self.settings = settings
        self.client_id = client_id
        self.what = what
        self.stats = LiveFanStats()

    async def _serve(self, client: aiomqtt.Client) -> None:
        raise NotImplementedError

    async def run(self) -> None:
        """Work until cancelled."""
        backoff = Backoff(initial=0.2, maximum=self.settings.reconnect_max_s)
        lost = False
        while True:
            try:
                async with _client(self.settings, self.client_id) as client:
                    self.stats.connected = True
                    backoff.reset()
                    logger.info("live %s: connected to %s", self.what, self.settings.where)
                    lost = False
                    await self._serve(client)
            except (aiomqtt.MqttError, OSError) as err:
                self.stats.connected = False
                if not lost:
                    logger.warning("live %s: broker lost (%s); reconnecting", self.what, err)
                    lost = True
                self.stats.reconnects += 1
            except Exception:  # the link's supervisor: log, start over
                self.stats.connected = False
                logger.exception("live %s: failed; starting over", self.what)
            await asyncio.sleep(backoff.next_delay())


class LiveFanOut(_Link):
    """A worker's live batches to the broker.

    Args:
        settings: the broker (``[ingest.mqtt]``).
        live: the worker's live channel.
        client_id: this publisher's MQTT client id (unique).
    """

    def __init__(
        self, settings: MqttIngestSection, live: Channel[LiveBatch], *, client_id: str
    ) -> None:
        super().__init__(settings, client_id, "fan-out")
        self._live = live
        self._sub: Subscription[LiveBatch] | None = None

    async def run(self) -> None:
        """Publish until cancelled; what comes while the broker is away is dropped."""
        async with self._live.subscribe("live-fanout") as sub:
            self._sub = sub
            await super().run()

    async def _serve(self, client: aiomqtt.Client) -> None:
        sub = self._sub
        assert sub is not None  # run() subscribed before connecting
        self.stats.dropped += len(sub.drain())  # while away: stale by now
        async for item in sub:
            body = encode_arrow(
                item.batch, edge=item.edge or "_", seq=0, historical=item.historical
            )
            await client.publish(
                live_topic(self.settings, item.edge), compress(body, _ENCODING), qos=0
            )
            self.stats.batches += 1


class LiveFanIn(_Link):
    """The workers' live batches from the broker onto this process's live channel.

    Args:
        settings: the broker (``[ingest.mqtt]``).
        live: this API server's live channel.
        client_id: a base for this subscriber's MQTT client id (made unique per process).
    """

    def __init__(
        self, settings: MqttIngestSection, live: Channel[LiveBatch], *, client_id: str
    ) -> None:
        super().__init__(settings, f"{client_id}-{socket.gethostname()}-{os.getpid()}", "fan-in")
        self._live = live

    async def _serve(self, client: aiomqtt.Client) -> None:
        await client.subscribe(live_filter(self.settings), qos=0)
        async for message in client.messages:
            payload = message.payload
            if not isinstance(payload, bytes | bytearray):
                self.stats.dropped += 1
                continue
            try:
                decoded = decode(
                    bytes(payload),
                    ARROW_MEDIA_TYPE,
                    max_bytes=_MAX_BYTES,
                    content_encoding=_ENCODING,
                )
            except PayloadError as err:
                self.stats.dropped += 1
                if self.stats.dropped == 1:
                    logger.warning("live fan-in: undecodable message on %s: %s", message.topic, err)
                continue
            edge = decoded.edge if decoded.edge not in (None, "_") else None
            self._live.publish(LiveBatch(decoded.batch, historical=decoded.historical, edge=edge))
            self.stats.batches += 1


async def stop_link(task: asyncio.Task[None] | None) -> None:
    """Cancel a fan-out or fan-in task and wait for it."""
    if task is None:
        return
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
