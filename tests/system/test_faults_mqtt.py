"""Fault tests on the MQTT path: `shopfloor edge` → fault proxy → Mosquitto → `shopfloor
server` (``[ingest.mqtt]``), all real processes, exact counts at the end.

The proxy sits between the edge and the broker; the platform reaches the broker
directly. The edge waits 1 s for the platform's answer to a batch and pings the broker
every second, so a link that swallows packets is noticed within a few seconds. The rig
and the counting (:func:`~tests.system.faults.finish`) are the HTTP tests' own.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from shopfloor.testing.faultproxy import FaultProxy
from shopfloor.testing.mosquitto import Mosquitto, broker_for_tests
from shopfloor.testing.processes import free_port

from .faults import (
    Rig,
    assert_whole_batches_only,
    edge_process,
    finish,
    outbox_identity,
    partition_then_blackhole,
    wait_until,
    write_edge_config,
    write_server_config,
)

pytestmark = pytest.mark.system

logger = logging.getLogger(__name__)


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Mosquitto]:
    made = broker_for_tests(lambda: Mosquitto(tmp_path / "broker"))
    try:
        yield made
    finally:
        made.stop()


@pytest.fixture
def rig(tmp_path: Path, broker: Mosquitto) -> Rig:
    made = Rig(tmp_path, free_port(), free_port())
    write_server_config(made.server_dir, made.server_port, mqtt_port=broker.port)
    return made


def edge_config(rig: Rig, proxy: FaultProxy, **kwargs: object) -> None:
    """The edge publishes through ``proxy`` (``url`` is unused with MQTT)."""
    write_edge_config(
        rig.edge_dir,
        url="http://127.0.0.1:1",
        health_port=rig.health_port,
        mqtt_port=proxy.port,
        **kwargs,  # type: ignore[arg-type]
    )


def test_partition_then_blackhole_past_the_keepalive_window(rig: Rig, broker: Mosquitto) -> None:
    """The blackhole is noticed by the MQTT keep-alive (1 s, given up after 1.5 s)."""
    with FaultProxy(broker.port) as proxy, rig.server() as server:
        edge_config(rig, proxy)
        with edge_process(rig.edge_dir, rig.health_port) as edge:
            counts = partition_then_blackhole(rig, edge, server, proxy)
    assert counts.durable_batches > 50


def test_flapping_link_through_100_reconnects(rig: Rig, broker: Mosquitto) -> None:
    with FaultProxy(broker.port) as proxy, rig.server() as server:
        edge_config(rig, proxy, speed=120, retry_max="100ms")
        with edge_process(rig.edge_dir, rig.health_port) as edge:
            wait_until(lambda: edge.health()["uplink"]["acked_batches"] > 10, "live flow")
            identity = outbox_identity(rig.outbox)
            proxy.flap(300, 100)  # MQTT needs a handshake and a subscribe per up phase
            wait_until(lambda: proxy.stats().reconnects >= 20, "warm-up reconnects")
            rss_start = edge.rss_kib()
            acked_start = edge.health()["buffer"]["acked_points"]
            seqs = [edge.health()["buffer"]["next_seq"]]
            # 100, not the HTTP suite's 200: each MQTT reconnect is a handshake, a
            # subscription and a 0.2 s backoff (~0.4 s a flap); 200 would cost 90 s of CI
            while proxy.stats().reconnects < 100 or proxy.stats().flaps < 100:
                time.sleep(0.5)
                seqs.append(edge.health()["buffer"]["next_seq"])
                assert len(seqs) < 240, "100 reconnects within two minutes"
            rss_end = edge.rss_kib()
            flapped = proxy.stats()
            acked_during = edge.health()["buffer"]["acked_points"] - acked_start
            logger.info("flapped: %s; %d points committed while flapping", flapped, acked_during)
            logger.info("edge RSS %d KiB → %d KiB", rss_start, rss_end)
            counts = finish(rig, edge, server, proxy)
    assert flapped.cut_fin >= 100
    assert acked_during > 0, "batches got through between the flaps"
    assert seqs == sorted(seqs), "one outbox: its seq never went back"
    assert seqs[-1] > seqs[0]
    assert outbox_identity(rig.outbox) == identity, "the outbox was never re-created"
    assert rss_end - rss_start < 4 * 1024, f"RSS {rss_start} KiB → {rss_end} KiB"
    assert counts.durable_batches > 50


def test_server_sigkilled_mid_commit_again_and_again(rig: Rig, broker: Mosquitto) -> None:
    """The platform dies between reading a batch from the broker and answering it: the
    broker re-delivers what the killed session had not acknowledged, the edge re-sends
    what got no answer, the ledger stores each batch once."""
    write_server_config(rig.server_dir, rig.server_port, ack_delay_s=0.25, mqtt_port=broker.port)
    with FaultProxy(broker.port) as proxy:
        edge_config(rig, proxy, backfill="6h", speed=1200, coalesce_points=20_000)
        with edge_process(rig.edge_dir, rig.health_port) as edge:
            committed = 0
            for kill in range(3):
                acked = edge.health()["uplink"]["acked_batches"]
                with rig.server() as server:
                    wait_until(
                        lambda: edge.health()["uplink"]["acked_batches"] > acked + 5,  # noqa: B023
                        f"commits before kill {kill}",
                    )
                    time.sleep(0.3 + 0.2 * kill)  # mid-commit, mid-answer
                    server.proc.kill()
                    server.proc.wait(10)
                committed = assert_whole_batches_only(rig.db)
                logger.info("kill %d: %d batches committed, each whole", kill, committed)
            with rig.server() as last:
                counts = finish(rig, edge, last, proxy)
    assert counts.durable_batches > committed
