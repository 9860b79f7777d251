"""Scaled out, the ingest worker owning an alarm's partition notifies and publishes it to
the UNS, once (issue 9): two real workers (in this process) over a real PostgreSQL and
Mosquitto, a real HTTP receiver for the webhooks; points written by a third shared
historian, as an API server taking HTTP batches would."""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import aiomqtt
import numpy as np
import psycopg

from shopfloor.config import ShopfloorConfig
from shopfloor.model import PointBatch, now_ns
from shopfloor.server.historian.postgres import PostgresHistorian
from shopfloor.server.rules.engine import AlarmEngine
from shopfloor.server.rules.partitions import PartitionMap, equipment_of, partition_of
from shopfloor.server.rules.pg_journal import PgAlarmJournal
from shopfloor.server.rules.rule import AlarmRule, rules_from_config
from shopfloor.server.worker import IngestWorker
from shopfloor.testing.mosquitto import Mosquitto

from .conftest import Receiver

MACHINES = 6
PARTITIONS = 4
LIMIT = 50.0
NAMES = [f"acme/p1/area/line/cell/m{m}/temp.H" for m in range(MACHINES)]
EXPECTED = Counter({(n, e): 1 for n in NAMES for e in ("activated", "cleared")})
"""Each alarm comes in and clears once."""


def _tag(machine: int) -> str:
    return f"acme/p1/area/line/cell/m{machine}/temp"


def _config(
    dsn: str, broker: Mosquitto, receiver: Receiver, *, escalate_after: str | None = None
) -> ShopfloorConfig:
    route: dict[str, Any] = {"channel": "hook", "events": ["activated", "cleared"]}
    if escalate_after is not None:
        route |= {"escalate_after": escalate_after, "escalate_to": "leads"}
    return ShopfloorConfig.model_validate(
        {
            "historian": {
                "kind": "postgres",
                "dsn": dsn,
                "shared": True,
                "flush_interval_s": 0.05,
            },
            "ingest": {
                "mqtt": {"port": broker.port, "shared_group": "ingest", "session_expiry": "0s"}
            },
            "alarms": {
                "partitions": PARTITIONS,
                "rules": [
                    {"tag": _tag(m), "kind": "H", "limit": LIMIT, "priority": "high"}
                    for m in range(MACHINES)
                ],
            },
            "notify": {
                "channels": [
                    {
                        "name": "hook",
                        "kind": "webhook",
                        "url": f"{receiver.url}/hook",
                        "rate_per_minute": 6000,
                    },
                    {
                        "name": "leads",
                        "kind": "webhook",
                        "url": f"{receiver.url}/leads",
                        "rate_per_minute": 6000,
                    },
                ],
                "routes": [route],
            },
            "uns": {"enabled": True, "port": broker.port, "topic_root": "uns"},
        }
    )


@asynccontextmanager
async def _worker(config: ShopfloorConfig, client_id: str) -> AsyncIterator[IngestWorker]:
    worker = IngestWorker(config, client_id=client_id)
    await worker.start()
    try:
        yield worker
    finally:
        await worker.close()


@asynccontextmanager
async def _writer(dsn: str, config: ShopfloorConfig) -> AsyncIterator[PostgresHistorian]:
    split = PartitionMap(_rules(config), PARTITIONS)
    writer = PostgresHistorian(dsn, flush_interval_s=0.05, shared=True, feed=split.route)
    await writer.start()
    try:
        yield writer
    finally:
        await writer.close()


def _rules(config: ShopfloorConfig) -> list[AlarmRule]:
    return list(rules_from_config(config.alarms))


def _batch(machines: range, value: float, ts: int) -> PointBatch:
    n = len(machines)
    return PointBatch.from_columns(
        [_tag(m) for m in machines], np.arange(n), np.full(n, ts), np.full(n, value)
    )


async def _until(what: str, probe: Callable[[], bool], timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not probe():
        if time.monotonic() > deadline:
            raise AssertionError(f"waited {timeout_s} s for {what}")
        await asyncio.sleep(0.05)


def _sent(receiver: Receiver, robot: str) -> Counter[tuple[str, str]]:
    return Counter((g["body"]["alarm"], g["body"]["event"]) for g in receiver.got.get(robot, []))


def _attempts(dsn: str) -> Counter[tuple[str, str, str]]:
    with psycopg.connect(dsn) as con:
        rows = con.execute(
            "SELECT alarm, event, channel FROM shopfloor.alarm_notifications WHERE ok"
        ).fetchall()
    return Counter((a, e, c) for a, e, c in rows)


async def _check_each_event_once(
    a: IngestWorker,
    b: IngestWorker,
    writer: PostgresHistorian,
    receiver: Receiver,
    uns: list[tuple[str, dict[str, Any]]],
) -> None:
    assert a.owner is not None
    assert b.owner is not None
    await _until(
        "the partitions split between the two owners",
        lambda: len(a.owner.held) == len(b.owner.held) == PARTITIONS // 2,  # type: ignore[union-attr]
    )
    t0 = now_ns()
    for seq, value in ((1, LIMIT + 10), (2, LIMIT - 10)):
        batch = _batch(range(MACHINES), value, t0 + seq)
        await writer.write_acknowledged(batch, edge="e", seq=seq)
    await _until("every activation and clear sent", lambda: _sent(receiver, "hook") == EXPECTED)
    await _until(
        "every alarm event on the UNS",
        lambda: Counter((d["alarm"], d["event"]) for _, d in uns) == EXPECTED,
    )
    # every partition has rules, so both owners journaled, and both workers announced
    parts = {partition_of(equipment_of(_tag(m)), PARTITIONS) for m in range(MACHINES)}
    assert parts == set(range(PARTITIONS))
    assert a.owner.transitions > 0
    assert b.owner.transitions > 0
    # the topic is the alarm's equipment, as a single server publishes it
    topics = {t for t, d in uns if d["alarm"] == NAMES[0]}
    assert topics == {f"uns/{_tag(0).rpartition('/')[0]}/_alarms/temp.H"}


async def test_two_owners_notify_and_publish_each_alarm_event_once(
    dsn: str, mosquitto: Mosquitto, receiver: Receiver
) -> None:
    config = _config(dsn, mosquitto, receiver)
    uns: list[tuple[str, dict[str, Any]]] = []

    async def listen(client: aiomqtt.Client) -> None:
        async for message in client.messages:
            assert isinstance(message.payload, bytes)
            uns.append((str(message.topic), json.loads(message.payload)))

    async with (
        aiomqtt.Client("127.0.0.1", mosquitto.port, identifier="uns-reader") as client,
        _worker(config, "w-a") as a,
        _worker(config, "w-b") as b,
        _writer(dsn, config) as writer,
    ):
        await client.subscribe("uns/#")
        reading = asyncio.create_task(listen(client))
        try:
            await _check_each_event_once(a, b, writer, receiver, uns)
        finally:
            reading.cancel()
            await asyncio.gather(reading, return_exceptions=True)
    # nothing more came while the workers stopped, and every send is logged once, in
    # the shared journal the API servers read
    assert _sent(receiver, "hook") == EXPECTED
    assert _attempts(dsn) == Counter({(n, e, "hook"): 1 for n, e in EXPECTED})
    assert "leads" not in receiver.got


async def test_a_pending_escalation_moves_with_its_partition_and_is_sent_once(
    dsn: str, mosquitto: Mosquitto, receiver: Receiver
) -> None:
    config = _config(dsn, mosquitto, receiver, escalate_after="6s")
    first, second = (f"{_tag(m)}.H" for m in (0, 1))
    async with _writer(dsn, config) as writer:
        async with _worker(config, "w-a") as a:
            assert a.owner is not None
            await _until("a owns every partition", lambda: len(a.owner.held) == PARTITIONS)  # type: ignore[union-attr]
            t0 = now_ns()
            await writer.write_acknowledged(_batch(range(2), LIMIT + 10, t0), edge="e", seq=1)
            await _until(
                "both activations sent by a",
                lambda: (
                    _sent(receiver, "hook")
                    == Counter({(first, "activated"): 1, (second, "activated"): 1})
                ),
            )
        # a is gone before the escalations were due (6 s after the activation)
        assert now_ns() < t0 + 6 * 10**9, "the machine was too slow to stop a in time"
        async with _worker(config, "w-b") as b:
            assert b.owner is not None
            await _until("b owns every partition", lambda: len(b.owner.held) == PARTITIONS)  # type: ignore[union-attr]
            # an operator acknowledges the second alarm through an API server's engine
            engine = AlarmEngine(
                _rules(config), lambda: PgAlarmJournal(dsn, "shopfloor"), follow=True
            )
            await engine.start()
            try:
                await engine.acknowledge(second, user="op")
            finally:
                await engine.close()
            await _until(
                "the first alarm's escalation sent by b",
                lambda: _sent(receiver, "leads") == Counter({(first, "activated"): 1}),
            )
            with psycopg.connect(dsn) as con:
                (pending,) = con.execute(
                    "SELECT count(*) FROM shopfloor.alarm_escalations"
                ).fetchone() or (None,)
            assert pending == 0  # the acknowledged one's was taken and dropped
    (escalation,) = receiver.got["leads"]
    assert escalation["body"]["escalation"] is True
    assert escalation["body"]["state"] == "unacknowledged"
    # b did not send again what a had sent
    assert _sent(receiver, "hook") == Counter({(first, "activated"): 1, (second, "activated"): 1})


def _journaled(dsn: str) -> int:
    with psycopg.connect(dsn) as con:
        row = con.execute("SELECT count(*) FROM shopfloor.alarm_journal").fetchone()
    return int(row[0]) if row else 0


async def test_a_stopping_worker_sends_what_it_journaled_first(
    dsn: str, mosquitto: Mosquitto, receiver: Receiver
) -> None:
    config = _config(dsn, mosquitto, receiver)
    receiver.fail_first["hook"] = 1  # the first try fails: the message waits for its retry
    async with _writer(dsn, config) as writer:
        async with _worker(config, "w-a") as a:
            assert a.owner is not None
            await _until("a owns every partition", lambda: len(a.owner.held) == PARTITIONS)  # type: ignore[union-attr]
            await writer.write_acknowledged(_batch(range(1), LIMIT + 10, now_ns()), edge="e", seq=1)
            await _until("the activation journaled", lambda: _journaled(dsn) == 1)
        # stopped (SIGTERM's path) while the retry was pending: it was sent before exit
        assert _sent(receiver, "hook") == Counter({(NAMES[0], "activated"): 2})
    (failed, sent) = _attempts_in_order(dsn)
    assert (failed, sent) == (False, True)


def _attempts_in_order(dsn: str) -> list[bool]:
    with psycopg.connect(dsn) as con:
        return [
            bool(ok)
            for (ok,) in con.execute(
                "SELECT ok FROM shopfloor.alarm_notifications ORDER BY id"
            ).fetchall()
        ]
