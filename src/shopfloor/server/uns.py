"""The Unified Namespace: every live value and alarm change published to MQTT.

Other systems of the plant (an MES, a data team's notebook, Node-RED) subscribe to the
broker instead of asking shopfloor. Each point of a live batch goes to its tag's path as
JSON (``{"value", "unit", "quality", "good", "timestamp", "ts"}``), retained by default so
that a new subscriber gets every tag's last value at once; each alarm transition goes to
``<equipment path>/_alarms/<alarm name's last part>`` with its state. Backlog batches
(``historical``) are not published: the namespace shows the present.

A lost broker is reconnected with backoff; what arrives meanwhile waits in a bounded
subscription to the live channel (drop-oldest, counted): the namespace is a view of now,
not a store.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import aiomqtt
import numpy as np

from shopfloor.config.durations import parse_duration_s
from shopfloor.config.uns import UnsSection
from shopfloor.errors import ShopfloorError
from shopfloor.model import LiveBatch, TagMeta
from shopfloor.model.points import is_good
from shopfloor.model.timefmt import format_ns
from shopfloor.runtime.backoff import Backoff
from shopfloor.runtime.channels import Channel, Subscription
from shopfloor.server.rules.alarms import Transition

__all__ = ["UnsPublisher", "UnsStats", "per_process"]

logger = logging.getLogger(__name__)

METADATA_REFRESH_S = 30.0


def per_process(settings: UnsSection) -> UnsSection:
    """``settings`` with a client id of this process's own: ``<uns.client_id>-<host>-<pid>``.

    Scaled out, several API servers publish the values (each those of the live fan-out),
    and a broker keeps one connection per client id, dropping the older one: with the
    configured id they would take turns being thrown off. The publisher's session ends
    with its connection (MQTT 5, no session expiry), so a new id at each start leaves no
    session behind.
    """
    suffix = f"-{socket.gethostname()}-{os.getpid()}"
    return settings.model_copy(
        update={"client_id": settings.client_id[: 128 - len(suffix)] + suffix}
    )


@dataclass
class UnsStats:
    """Counters for ``/healthz``."""

    connected: bool = False
    published: int = 0
    reconnects: int = 0


class UnsPublisher:
    """Publishes ``live`` values and ``alarms`` transitions under ``settings``.

    Args:
        settings: the ``[uns]`` section (enabled).
        live: the live channel.
        alarms: the alarm engine's events, if alarms are published too.
        alarm_tag: the tag an alarm watches, by alarm name (its equipment is where the
            alarm's state is published).
        metadata: returns every tag's metadata (units); called now and then.
    """

    def __init__(
        self,
        settings: UnsSection,
        live: Channel[LiveBatch],
        *,
        alarms: Channel[Transition] | None = None,
        alarm_tag: Callable[[str], str | None] | None = None,
        metadata: Callable[[], Awaitable[Sequence[TagMeta]]] | None = None,
    ) -> None:
        self.settings = settings
        self._live = live
        self._alarms = alarms
        self._alarm_tag = alarm_tag or (lambda _name: None)
        self._metadata = metadata
        self._units: dict[str, str] = {}
        self.stats = UnsStats()

    async def run(self) -> None:
        """Publish until cancelled; reconnect when the broker goes away."""
        backoff = Backoff(initial=0.2, maximum=10.0)
        async with contextlib.AsyncExitStack() as stack:
            values = await stack.enter_async_context(self._live.subscribe("uns"))
            alarms = (
                await stack.enter_async_context(self._alarms.subscribe("uns"))
                if self._alarms is not None
                else None
            )
            while True:
                try:
                    async with self._client() as client:
                        self.stats.connected = True
                        backoff.reset()
                        logger.info("UNS: publishing to %s", self.settings.host)
                        async with asyncio.TaskGroup() as tasks:
                            tasks.create_task(self._values(client, values), name="uns/values")
                            if alarms is not None:
                                tasks.create_task(
                                    self._alarm_states(client, alarms), name="uns/alarms"
                                )
                            tasks.create_task(self._refresh_units(), name="uns/units")
                except* (aiomqtt.MqttError, OSError) as group:
                    self.stats.connected = False
                    self.stats.reconnects += 1
                    logger.warning("UNS: broker lost (%s); reconnecting", group.exceptions[0])
                except* Exception:  # the supervisor of the link: log, start over
                    self.stats.connected = False
                    logger.exception("UNS: publishing failed; starting over")
                await asyncio.sleep(backoff.next_delay())

    def _client(self) -> aiomqtt.Client:
        settings = self.settings
        return aiomqtt.Client(
            settings.host,
            settings.broker_port,
            username=settings.username,
            password=settings.password(),
            identifier=settings.client_id,
            protocol=aiomqtt.ProtocolVersion.V5,
            keepalive=max(1, round(parse_duration_s(settings.keepalive))),
            tls_context=settings.ssl_context() if settings.tls is not None else None,
        )

    async def _refresh_units(self) -> None:
        while self._metadata is not None:
            with contextlib.suppress(ShopfloorError):  # metadata is a nicety, never fatal
                self._units = {m.path: m.unit for m in await self._metadata()}
            await asyncio.sleep(METADATA_REFRESH_S)

    async def _values(self, client: aiomqtt.Client, values: Subscription[LiveBatch]) -> None:
        async for item in values:
            if item.historical:
                continue
            for topic, payload in self._messages(item):
                await client.publish(
                    topic, payload, qos=self.settings.qos, retain=self.settings.retain
                )
                self.stats.published += 1

    def _messages(self, live: LiveBatch) -> list[tuple[str, bytes]]:
        """One message per point, in time order (the last one retained is the newest)."""
        batch = live.batch
        order = np.argsort(batch.ts, kind="stable")
        good = is_good(batch.quality)
        texts = batch.text.to_pylist() if batch.text is not None else None
        out = []
        for i in order.tolist():
            path = batch.tags[int(batch.tag_index[i])]
            value = batch.value[i]
            text = texts[i] if texts is not None else None
            doc = {
                "value": text if text is not None else (None if np.isnan(value) else float(value)),
                "unit": self._units.get(path, ""),
                "quality": int(batch.quality[i]),
                "good": bool(good[i]),
                "timestamp": format_ns(int(batch.ts[i])),
                "ts": int(batch.ts[i]),
            }
            out.append((self.settings.topic(path), json.dumps(doc).encode()))
        return out

    async def _alarm_states(self, client: aiomqtt.Client, alarms: Subscription[Transition]) -> None:
        async for t in alarms:
            tag = self._alarm_tag(t.alarm) or t.alarm
            equipment = tag.rpartition("/")[0] or tag
            name = t.alarm.rsplit("/", 1)[-1]
            doc = {
                "alarm": t.alarm,
                "state": t.after.value,
                "event": t.event.value,
                "value": t.value,
                "timestamp": format_ns(t.ts_ns),
            }
            await client.publish(
                self.settings.topic(f"{equipment}/_alarms/{name}"),
                json.dumps(doc).encode(),
                qos=1,
                retain=True,
            )
            self.stats.published += 1
