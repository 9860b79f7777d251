"""Writes through remote edges: the platform's commands over the broker of ``[ingest.mqtt]``.

Each edge whose MQTT uplink serves commands announces, retained on
``{root}/edges/{edge}/writables``, the connectors that allow writes and their writable
tags. :class:`RemoteWriter` keeps that catalogue and, for a tag in it, sends ``read`` and
``write`` commands to ``{root}/cmd/{edge}/{verb}`` and waits for the edge's result on
``{root}/edges/{edge}/results`` (docs/writes.md). Its connectors are named
``{edge}:{connector}``, so the same connector name on two edges has two switches.

The edge checks every command again against its own configuration (``allow_writes``,
``writable``, the value's type and range) and refuses a write past its ``expires_ns``;
the checks made here, from the announced metadata, only spare a round trip.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import secrets
from collections.abc import Callable, Sequence
from typing import Any

import aiomqtt

from shopfloor.config.mqtt_link import TOPIC_RESULTS, TOPIC_WRITABLES, MqttLinkSettings
from shopfloor.errors import ConfigError, ConnectorUnavailable, PayloadError, WriteRefused
from shopfloor.model import now_ns
from shopfloor.model.control import WritableTag, WriteValue
from shopfloor.runtime.backoff import Backoff

__all__ = ["RemoteWriter"]

logger = logging.getLogger(__name__)

_MAX_MESSAGE = 1 << 20
_MAX_WAITING = 256


class RemoteWriter:
    """The connector side of writes for remote edges (an ``EquipmentWriter``).

    Args:
        settings: the broker (``[ingest.mqtt]``); the client id gets ``-writes`` appended.
        client_id: the MQTT client id of this platform process.
        timeout_s: how long a command waits for the edge's result; a write's
            ``expires_ns`` is this far ahead too, so a late one is never carried out.
        clock_ns: wall clock in UTC nanoseconds.
    """

    def __init__(
        self,
        settings: MqttLinkSettings,
        *,
        client_id: str,
        timeout_s: float = 10.0,
        clock_ns: Callable[[], int] = now_ns,
    ) -> None:
        self.settings = settings
        self.client_id = f"{client_id}-writes"
        self.timeout_s = timeout_s
        self._clock_ns = clock_ns
        self._connectors: dict[str, list[str]] = {}  # edge -> connector names
        self._tags: dict[str, tuple[str, WritableTag]] = {}  # path -> (edge, tag)
        self._waiting: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._client: aiomqtt.Client | None = None
        self._task: asyncio.Task[None] | None = None
        self._down_logged = False

    async def start(self) -> None:
        """Connect in the background (and reconnect when the link is lost)."""
        if self._task is None:
            self._task = asyncio.create_task(self._link(), name="server/remote-writes")

    async def close(self) -> None:
        """Disconnect. Idempotent."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    # --------------------------------------------------------------- catalogue
    def connectors(self) -> Sequence[str]:
        """``{edge}:{connector}`` of every remote connector that allows writes."""
        return [f"{edge}:{name}" for edge, names in self._connectors.items() for name in names]

    def target(self, path: str) -> WritableTag | None:
        """The remote writable tag at ``path``, or None."""
        found = self._tags.get(path)
        return None if found is None else found[1]

    def targets(self) -> list[WritableTag]:
        """Every remote writable tag."""
        return [tag for _, tag in self._tags.values()]

    def check(self, path: str, value: WriteValue) -> WriteValue:
        """The checks the announced metadata allows (the edge checks everything again).

        Raises:
            PayloadError: the tag is unknown here (``path``) or the value cannot fit it.
        """
        tag = self.target(path)
        if tag is None:
            raise PayloadError("path", f"no remote connector that allows writes has {path!r}")
        if tag.states:
            labels = {label: number for number, label in tag.states}
            if isinstance(value, str) and value in labels:
                return value
            if type(value) is int and value in dict(tag.states):
                return dict(tag.states)[value]
            raise PayloadError("value", f"tag {path} takes one of {', '.join(labels)}")
        if tag.data_type == "bool":
            if isinstance(value, bool) or value in (0, 1):
                return bool(value)
            raise PayloadError("value", f"tag {path} is a flag: send true or false")
        if tag.data_type == "string":
            if isinstance(value, str):
                return value
            raise PayloadError("value", f"tag {path} holds text: send a string")
        if isinstance(value, bool | str) or not math.isfinite(float(value)):
            raise PayloadError("value", f"tag {path} takes a finite number, not {value!r}")
        if tag.eng_low is not None and value < tag.eng_low:
            raise PayloadError("value", f"{value} is below the range of {path} ({tag.eng_low})")
        if tag.eng_high is not None and value > tag.eng_high:
            raise PayloadError("value", f"{value} is above the range of {path} ({tag.eng_high})")
        return value

    # ---------------------------------------------------------------- commands
    async def read(self, path: str) -> WriteValue | None:
        """The tag's present value, read by its edge from the device."""
        result = await self._command(path, "read", {})
        old: WriteValue | None = result.get("old")
        return old

    async def write(self, path: str, value: WriteValue) -> WriteValue | None:
        """Have the edge write ``value`` and read it back; the value read back."""
        checked = self.check(path, value)
        expires = self._clock_ns() + round(self.timeout_s * 1e9)
        result = await self._command(path, "write", {"value": checked, "expires_ns": expires})
        new: WriteValue | None = result.get("new")
        return new

    async def _command(self, path: str, verb: str, body: dict[str, Any]) -> dict[str, Any]:
        found = self._tags.get(path)
        if found is None:
            raise PayloadError("path", f"no remote connector that allows writes has {path!r}")
        edge = found[0]
        client = self._client
        if client is None:
            raise ConnectorUnavailable(f"no connection to the MQTT broker {self.settings.where}")
        if len(self._waiting) >= _MAX_WAITING:
            raise ConnectorUnavailable("too many commands wait for their edges' results")
        ident = secrets.token_hex(12)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiting[ident] = future
        try:
            payload = json.dumps({"id": ident, "path": path, **body}).encode()
            await client.publish(self.settings.command_topic(edge, verb), payload, qos=1)
            result = await asyncio.wait_for(future, self.timeout_s)
        except aiomqtt.MqttError as err:
            raise ConnectorUnavailable(f"edge {edge}: the command was not sent: {err}") from err
        except TimeoutError as err:
            raise ConnectorUnavailable(
                f"edge {edge} did not answer within {self.timeout_s:g} s"
            ) from err
        finally:
            self._waiting.pop(ident, None)
        if result.get("ok") is True:
            return result
        error = result.get("error")
        error = error if isinstance(error, dict) else {}
        code, message = error.get("code"), str(error.get("message", "refused"))
        if code == "invalid_parameter":
            raise PayloadError(str(error.get("field") or "value"), f"edge {edge}: {message}")
        if code == "write_refused":
            raise WriteRefused(f"edge {edge}: {message}")
        raise ConnectorUnavailable(f"edge {edge}: {message} ({code})")

    # -------------------------------------------------------------------- link
    async def _link(self) -> None:
        backoff = Backoff(initial=0.2, maximum=self.settings.reconnect_max_s)
        while True:
            try:
                async with await self._connect() as client:
                    for kind in (TOPIC_WRITABLES, TOPIC_RESULTS):
                        await client.subscribe(self.settings.topic_filter(kind), qos=1)
                    self._client = client
                    backoff.reset()
                    if self._down_logged:
                        self._down_logged = False
                        logger.info("remote writes: connected to %s again", self.settings.where)
                    async for message in client.messages:
                        self._receive(str(message.topic), message.payload)
            except (aiomqtt.MqttError, ConfigError) as err:
                if not self._down_logged:
                    self._down_logged = True
                    logger.warning(
                        "remote writes: no connection to %s (%s); retrying",
                        self.settings.where,
                        err,
                    )
            finally:
                self._client = None
            await asyncio.sleep(backoff.next_delay())

    async def _connect(self) -> aiomqtt.Client:
        settings = self.settings
        password = await asyncio.to_thread(settings.password)
        tls = await asyncio.to_thread(settings.ssl_context) if settings.tls is not None else None
        return aiomqtt.Client(
            settings.host,
            settings.broker_port,
            username=settings.username,
            password=password,
            identifier=self.client_id,
            protocol=aiomqtt.ProtocolVersion.V5,
            keepalive=settings.keepalive_s,
            tls_context=tls,
            tls_insecure=True if settings.tls is not None and settings.tls.insecure else None,
        )

    def _receive(self, topic: str, payload: Any) -> None:
        where = self.settings.parse_topic(topic)
        if where is None or not isinstance(payload, bytes | bytearray):
            return
        edge, kind = where
        if len(payload) > _MAX_MESSAGE:
            return
        if kind == TOPIC_WRITABLES:
            self._catalogue(edge, bytes(payload))
            return
        try:
            doc = json.loads(payload)
        except ValueError:
            return
        if isinstance(doc, dict):
            future = self._waiting.get(str(doc.get("id")))
            if future is not None and not future.done():
                future.set_result(doc)

    def _catalogue(self, edge: str, payload: bytes) -> None:
        """Take an edge's announcement of what it may be commanded (empty: nothing)."""
        for path in [p for p, (e, _) in self._tags.items() if e == edge]:
            del self._tags[path]
        self._connectors.pop(edge, None)
        if not payload:
            return
        try:
            doc = json.loads(payload)
            names = [str(n) for n in doc["connectors"]]
            tags = [
                WritableTag(
                    path=str(t["path"]),
                    connector=f"{edge}:{t['connector']}",
                    writable=True,
                    data_type=str(t.get("data_type", "")),
                    unit=str(t.get("unit", "")),
                    eng_low=t.get("eng_low"),
                    eng_high=t.get("eng_high"),
                    states=tuple((int(k), str(v)) for k, v in t.get("states", ())),
                )
                for t in doc["tags"]
            ]
        except (ValueError, KeyError, TypeError) as err:
            logger.warning(
                "edge %s announced writable tags the platform cannot read: %s", edge, err
            )
            return
        self._connectors[edge] = names
        for tag in tags:
            self._tags[tag.path] = (edge, tag)
        logger.info("edge %s: writes possible through %s", edge, ", ".join(names) or "nothing")
