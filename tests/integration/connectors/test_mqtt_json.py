"""The MQTT JSON connector against a real, throwaway Mosquitto broker."""

from __future__ import annotations

import asyncio
import calendar
import contextlib
import json
import logging
import math
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

import aiomqtt
import numpy as np
import pytest

from shopfloor.config.connectors.mqtt import MqttConnectorConfig
from shopfloor.edge.agent import EdgeAgent
from shopfloor.edge.connectors.mqtt import BAD_NO_DATA, BAD_TYPE_MISMATCH, MqttConnector
from shopfloor.errors import ConnectorUnavailable
from shopfloor.model import PointBatch, Quality, TagMeta
from shopfloor.testing.mosquitto import Mosquitto

pytestmark = pytest.mark.timeout(30)


def config(broker: Mosquitto, **kwargs: Any) -> MqttConnectorConfig:
    return MqttConnectorConfig.model_validate(
        {"name": "mqtt-test", "port": broker.port, "timeout": "3s", **kwargs}
    )


@contextlib.asynccontextmanager
async def publisher(broker: Mosquitto, **kwargs: Any) -> AsyncIterator[aiomqtt.Client]:
    async with aiomqtt.Client(broker.host, kwargs.pop("port", broker.port), **kwargs) as client:
        yield client


class Collector:
    """Runs ``connector.subscribe()`` in a task and keeps what it yields."""

    def __init__(self, connector: MqttConnector) -> None:
        self.connector = connector
        self.batches: list[PointBatch] = []
        self.tags: list[TagMeta] = []
        self.order: list[str] = []
        self.error: BaseException | None = None
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        try:
            async for item in self.connector.subscribe():
                if isinstance(item, PointBatch):
                    self.batches.append(item)
                    self.order.append("batch")
                else:
                    self.tags.extend(item)
                    self.order.append("tags")
        except ConnectorUnavailable as err:
            self.error = err

    def points(self) -> list[tuple[str, int, Any, int]]:
        out = []
        for b in self.batches:
            texts = b.text.to_pylist() if b.text is not None else [None] * len(b)
            for p, ts, v, q, t in zip(b.paths(), b.ts, b.value, b.quality, texts, strict=True):
                value = t if t is not None else (None if math.isnan(v) else float(v))
                out.append((str(p), int(ts), value, int(q)))
        return out

    def latest(self) -> dict[str, tuple[int, Any, int]]:
        return {p: (ts, v, q) for p, ts, v, q in self.points()}

    async def until(self, predicate: Callable[[], bool], timeout_s: float = 10.0) -> None:
        async with asyncio.timeout(timeout_s):
            while not predicate():
                if self.task.done():
                    raise AssertionError(f"subscription ended: {self.error!r}")
                await asyncio.sleep(0.01)

    async def stop(self) -> None:
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task
        await self.connector.close()


def utc_ns(*fields: int) -> int:
    """UTC ns of (year, month, day, hour, minute, second, millisecond)."""
    *ymdhms, ms = fields
    return (calendar.timegm(tuple(ymdhms)) * 1000 + ms) * 10**6


async def test_wildcards_pointers_and_timestamps_map_messages_to_tags(
    mosquitto: Mosquitto,
) -> None:
    cfg = config(
        mosquitto,
        asset="acme/plant-1",
        tags=[
            {
                "name": "temperature",
                "path": "acme/plant-1/{1}/temperature",
                "topic": "factory/+/telemetry",
                "pointer": "/sensors/0/value",
                "timestamp": "/time",
                "unit": "degC",
            },
            {
                "name": "running",
                "path": "acme/plant-1/{1}/running",
                "topic": "factory/+/telemetry",
                "pointer": "/state/run~1ok",
                "data_type": "bool",
            },
            {
                "name": "{1}",
                "path": "acme/plant-1/lab/{1}",
                "topic": "lab/#",
                "pointer": "/v",
                "timestamp": "/at",
                "timestamp_format": "iso8601",
                "data_type": "string",
            },
        ],
    )
    connector = MqttConnector.from_config(cfg)
    async with publisher(mosquitto) as pub:
        # retained before the connector subscribes: delivered on subscription
        await pub.publish(
            "factory/press-1/telemetry",
            json.dumps(
                {"time": 1714564800250, "sensors": [{"value": 81.5}], "state": {"run/ok": True}}
            ),
            qos=1,
            retain=True,
        )
        await connector.connect()
        got = Collector(connector)
        try:
            await pub.publish(
                "factory/press-2/telemetry",
                json.dumps(
                    {"time": 1714564801, "sensors": [{"value": -3}], "state": {"run/ok": False}}
                ),
                qos=1,
            )
            await pub.publish(
                "lab/bench/3",
                json.dumps({"v": "idle", "at": "2024-05-01T14:00:02.5+02:00"}),
                qos=1,
            )
            await got.until(lambda: len(got.points()) >= 5)
            assert got.latest() == {
                "acme/plant-1/press-1/temperature": (utc_ns(2024, 5, 1, 12, 0, 0, 250), 81.5, 0),
                "acme/plant-1/press-1/running": (got.latest()["acme/plant-1/press-1/running"][0],
                                                 1.0, 0),
                "acme/plant-1/press-2/temperature": (utc_ns(2024, 5, 1, 12, 0, 1, 0), -3.0, 0),
                "acme/plant-1/press-2/running": (got.latest()["acme/plant-1/press-2/running"][0],
                                                 0.0, 0),
                "acme/plant-1/lab/bench/3": (utc_ns(2024, 5, 1, 12, 0, 2, 500), "idle", 0),
            }  # fmt: skip
            announced = {m.path: m for m in got.tags}
            assert set(announced) == set(got.latest())
            assert announced["acme/plant-1/press-2/temperature"].unit == "degC"
            assert got.order[0] == "tags"  # tags are announced before their values
            assert set(connector.tags()) == set(got.tags)
        finally:
            await got.stop()


async def test_high_rates_are_batched_and_receive_times_are_kept(mosquitto: Mosquitto) -> None:
    cfg = config(mosquitto, tags=[{"name": "n", "path": "a/{1}/n", "topic": "rate/+",
                                   "pointer": "/n"}])  # fmt: skip
    connector = MqttConnector.from_config(cfg)
    await connector.connect()
    got = Collector(connector)
    try:
        async with publisher(mosquitto) as pub:
            for i in range(600):
                await pub.publish(f"rate/m{i % 3}", json.dumps({"n": i}), qos=1)
        await got.until(lambda: len(got.points()) >= 600)
        assert len(got.batches) < 600
        assert max(len(b) for b in got.batches) > 1
        for machine in range(3):
            points = [p for p in got.points() if p[0] == f"a/m{machine}/n"]
            assert [v for _, _, v, _ in points] == [float(i) for i in range(machine, 600, 3)]
            stamps = np.array([ts for _, ts, _, _ in points])
            assert (np.diff(stamps) >= 0).all()  # stamped on arrival, in order
    finally:
        await got.stop()


async def test_hostile_payloads_turn_the_tag_bad_with_the_reason_logged_once(
    mosquitto: Mosquitto, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="shopfloor.edge.connectors.mqtt")
    cfg = config(
        mosquitto,
        max_payload=4096,
        tags=[{"name": "v", "path": "x/v", "topic": "dev/1", "pointer": "/v"}],
    )
    connector = MqttConnector.from_config(cfg)
    await connector.connect()
    got = Collector(connector)
    hostile = [
        (b"\xff\xfe garbage \x00", Quality.BAD_DECODING_ERROR),
        (b"\xff\xfe garbage \x00", Quality.BAD_DECODING_ERROR),
        (b"[" * 50_00 + b"]" * 50_00, Quality.BAD_DECODING_ERROR),  # larger than max_payload
        (b"[" * 4000, Quality.BAD_DECODING_ERROR),  # deeper than the parser goes
        (b'{"v": "21.5"}', BAD_TYPE_MISMATCH),
        (b'{"w": 1}', BAD_NO_DATA),
        (b'{"v": null}', BAD_NO_DATA),
        (b'{"v": 21.5}', Quality.GOOD),
    ]
    try:
        async with publisher(mosquitto) as pub:
            for payload, _ in hostile:
                await pub.publish("dev/1", payload, qos=1)
        await got.until(lambda: len(got.points()) >= len(hostile))
        assert [q for _, _, _, q in got.points()] == [q for _, q in hostile]
        assert got.points()[-1][2] == 21.5
        warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        # one line per change of reason, not per message
        assert sum("not JSON" in w for w in warnings) == 2  # garbage, then the deep one
        assert sum("exceeds max_payload" in w for w in warnings) == 1
        assert sum("recovered" in r.getMessage() for r in caplog.records) == 1
        assert not got.task.done()
    finally:
        await got.stop()


async def test_connection_loss_ends_the_subscription_with_connector_unavailable(
    mosquitto: Mosquitto,
) -> None:
    connector = MqttConnector.from_config(
        config(mosquitto, tags=[{"name": "v", "topic": "t", "pointer": ""}])
    )
    await connector.connect()
    got = Collector(connector)
    try:
        await asyncio.sleep(0.1)
        mosquitto.kill()
        async with asyncio.timeout(10):
            await got.task
        assert isinstance(got.error, ConnectorUnavailable)
        with pytest.raises(ConnectorUnavailable, match="cannot connect"):
            await connector.connect()
    finally:
        await got.stop()


class RecordingUplink:
    def __init__(self) -> None:
        self.tags: list[TagMeta] = []
        self.batches: list[PointBatch] = []

    async def announce(self, tags: Sequence[TagMeta]) -> None:
        self.tags.extend(tags)

    async def send(self, batch: PointBatch) -> None:
        self.batches.append(batch)

    def points(self, path: str) -> list[tuple[float, int]]:
        return [
            (float(v), int(q))
            for b in self.batches
            for p, v, q in zip(b.paths(), b.value, b.quality, strict=True)
            if p == path
        ]


async def test_broker_restart_turns_tags_bad_then_recovers_and_resubscribes(
    mosquitto: Mosquitto, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="shopfloor.edge.agent")
    cfg = config(mosquitto, tags=[{"name": "p", "path": "a/p", "topic": "m/p", "pointer": ""}])
    uplink = RecordingUplink()
    agent = EdgeAgent([MqttConnector.from_config(cfg)], uplink, retry=(0.05, 0.3))
    await agent.start()

    async def publish_until(value: float) -> None:
        async with asyncio.timeout(15):
            while (value, Quality.GOOD) not in uplink.points("a/p"):
                with contextlib.suppress(aiomqtt.MqttError):
                    async with publisher(mosquitto) as pub:
                        await pub.publish("m/p", str(value), qos=1)
                await asyncio.sleep(0.1)

    try:
        await publish_until(1.0)
        mosquitto.restart()
        await publish_until(2.0)  # only arrives once the connector subscribed again
        qualities = [q for _, q in uplink.points("a/p")]
        first_bad = qualities.index(Quality.BAD_COMMUNICATION_ERROR)
        assert qualities[first_bad + 1 :].count(Quality.BAD_COMMUNICATION_ERROR) == 0
        assert qualities[-1] == Quality.GOOD
        assert first_bad > 0
        assert caplog.text.count("unavailable") == 1
        assert caplog.text.count("recovered") == 1
    finally:
        await agent.stop()


async def test_tls_with_username_and_password_from_the_environment(
    make_mosquitto: Callable[..., Mosquitto], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    broker = make_mosquitto(tls=True, require_client_cert=True, users={"edge": "s3cret"})
    assert broker.tls is not None
    assert broker.tls_port is not None
    monkeypatch.setenv("MQTT_TEST_PASSWORD", "s3cret")
    tls = {
        "ca_file": str(broker.tls.ca_file),
        "cert_file": str(broker.tls.client_cert),
        "key_file": str(broker.tls.client_key),
    }
    tag = {"name": "v", "path": "s/v", "topic": "secure/v", "pointer": ""}
    cfg = MqttConnectorConfig.model_validate(
        {"name": "tls", "host": "localhost", "port": broker.tls_port, "tls": tls,
         "username": "edge", "password_env": "MQTT_TEST_PASSWORD", "tags": [tag]}
    )  # fmt: skip
    connector = MqttConnector.from_config(cfg)
    await connector.connect()
    got = Collector(connector)
    try:
        async with publisher(broker, username="edge", password="s3cret") as pub:
            await pub.publish("secure/v", "42", qos=1)
        await got.until(lambda: len(got.points()) >= 1)
        assert got.points()[0][2:] == (42.0, Quality.GOOD)
    finally:
        await got.stop()

    secret = tmp_path / "password"
    secret.write_text("wrong\n")
    wrong = cfg.model_copy(update={"password_env": None, "password_file": secret})
    with pytest.raises(ConnectorUnavailable, match=r"(?i)not authori[sz]ed|bad user"):
        await MqttConnector.from_config(wrong).connect()

    no_client_cert = cfg.model_copy(update={"tls": cfg.tls.model_copy(  # type: ignore[union-attr]
        update={"cert_file": None, "key_file": None})})  # fmt: skip
    with pytest.raises(ConnectorUnavailable):
        await MqttConnector.from_config(no_client_cert).connect()

    other_ca = make_mosquitto(tls=True)  # a second PKI: its CA did not sign our broker
    assert other_ca.tls is not None
    untrusted = cfg.model_copy(update={"tls": cfg.tls.model_copy(  # type: ignore[union-attr]
        update={"ca_file": other_ca.tls.ca_file})})  # fmt: skip
    with pytest.raises(ConnectorUnavailable, match=r"(?i)certificate"):
        await MqttConnector.from_config(untrusted).connect()


async def test_wrong_password_makes_the_connector_unavailable_logged_once(
    make_mosquitto: Callable[..., Mosquitto],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="shopfloor.edge.agent")
    broker = make_mosquitto(users={"edge": "s3cret"})
    monkeypatch.setenv("MQTT_TEST_PASSWORD", "guess")
    cfg = config(broker, username="edge", password_env="MQTT_TEST_PASSWORD",
                 tags=[{"name": "v", "path": "a/v", "topic": "t", "pointer": ""}])  # fmt: skip
    connector = MqttConnector.from_config(cfg)
    agent = EdgeAgent([connector], RecordingUplink(), retry=(0.02, 0.05))
    await agent.start()
    try:
        async with asyncio.timeout(10):
            while agent.health["mqtt-test"].errors < 4:  # noqa: ASYNC110 - polling health
                await asyncio.sleep(0.02)
    finally:
        await agent.stop()
    health = agent.health["mqtt-test"]
    assert health.last_error is not None
    assert "authori" in health.last_error.lower()
    assert caplog.text.count("unavailable") == 1
