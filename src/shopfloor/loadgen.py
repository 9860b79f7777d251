"""A load generator: N simulated edges × M tags through a real broker (``shopfloor loadgen``).

Each simulated edge is what ``shopfloor edge`` is on the wire, without sampling and
without a disk outbox: the edge's own MQTT uplink (:class:`~shopfloor.edge.uplink.mqtt.
MqttTransport`, one persistent MQTT 5 session per edge), the edge's framing
(:func:`~shopfloor.edge.uplink.framing.frame`: Arrow IPC, zstd, the wire metadata), and
the outbox's rule: a batch keeps its ``seq`` until the platform answers that it committed
it, and is sent again, unchanged, after no answer or a "busy". So the platform sees
exactly what real edges would send it, duplicates included, and the counts here are the
edges' view: a point is *acknowledged* when the platform said its batch was committed.

It composes edge pieces, so it lives outside ``shopfloor.edge`` and ``shopfloor.server``
(the import contract keeps those two apart); the platform is only reached through the
broker.

Every point is unique per tag (a strictly increasing nanosecond timestamp per edge), so a
test can count stored rows per ``(tag, ts)`` against the acknowledged points: lost =
acknowledged − stored, duplicated = stored − unique. Latency is from the moment a batch's
newest value was produced to the platform's answer, which is published after the commit:
by then the value is queryable.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from shopfloor.config.edge import UplinkMqttSection
from shopfloor.edge.buffer.base import StoredBatch
from shopfloor.edge.buffer.payload import encode_payload
from shopfloor.edge.uplink.framing import frame
from shopfloor.edge.uplink.http import Verdict
from shopfloor.edge.uplink.mqtt import MqttTransport
from shopfloor.model import PointBatch, now_ns

__all__ = ["LoadPlan", "LoadReport", "run_load", "tag_path"]

logger = logging.getLogger(__name__)

_RETRY_S = 0.2
"""Pause before sending a batch again after no answer or a refusal to take it now."""


def tag_path(edge: int, tag: int) -> str:
    """The ISA-95 path of simulated tag ``tag`` of simulated edge ``edge``."""
    return f"loadgen/site/area/edge{edge:04d}/cell/tag{tag:05d}"


@dataclass(frozen=True, slots=True)
class LoadPlan:
    """What to play.

    Attributes:
        edges: simulated edges, each its own MQTT session and seq.
        tags: tags per edge.
        samples: values per tag in one batch (points per batch = tags × samples).
        rate: points per second over all edges; 0 sends as fast as answers come back.
        duration_s: how long batches are produced.
        window: batches of one edge awaiting their answer at once (the edge's window).
        timeout_s: how long a batch waits for its answer before it is sent again.
        drain_s: after producing stops, how long unanswered batches may still take.
        edge_prefix: edge ids are ``<prefix>-<n>``; client ids add a ``run`` tag.
        run: distinguishes the MQTT sessions of separate runs on one broker.
    """

    edges: int = 4
    tags: int = 100
    samples: int = 10
    rate: float = 0.0
    duration_s: float = 10.0
    window: int = 2
    timeout_s: float = 10.0
    drain_s: float = 60.0
    edge_prefix: str = "loadgen"
    run: str = ""

    @property
    def batch_points(self) -> int:
        """Points in one batch."""
        return self.tags * self.samples


@dataclass(slots=True)
class LoadReport:
    """What happened, as the edges saw it.

    Attributes:
        batches: batches produced.
        points: points produced.
        acknowledged_batches: batches the platform answered as committed.
        acknowledged_points: their points.
        duplicate_answers: committed answers that said "duplicate" (stored before, e.g.
            by a worker whose answer was lost).
        resends: batches sent again after no answer or a "busy".
        refused: batches the platform refused as invalid.
        unacknowledged: batches still without a committed answer at the end.
        elapsed_s: from the first batch produced to the last answer.
        latencies_ms: per acknowledged batch, newest value produced → answer.
    """

    batches: int = 0
    points: int = 0
    acknowledged_batches: int = 0
    acknowledged_points: int = 0
    duplicate_answers: int = 0
    resends: int = 0
    refused: int = 0
    unacknowledged: int = 0
    elapsed_s: float = 0.0
    latencies_ms: list[float] = field(default_factory=list)

    @property
    def points_per_s(self) -> float:
        """Acknowledged points per second over the run."""
        return self.acknowledged_points / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def percentile_ms(self, q: float) -> float:
        """The ``q``-th percentile of the latencies (NaN without any)."""
        if not self.latencies_ms:
            return float("nan")
        return float(np.percentile(np.asarray(self.latencies_ms), q))

    def summary(self) -> dict[str, Any]:
        """The figures as a JSON-able dict (for ``--json``)."""
        return {
            "batches": self.batches,
            "points": self.points,
            "acknowledged_batches": self.acknowledged_batches,
            "acknowledged_points": self.acknowledged_points,
            "duplicate_answers": self.duplicate_answers,
            "resends": self.resends,
            "refused": self.refused,
            "unacknowledged": self.unacknowledged,
            "elapsed_s": round(self.elapsed_s, 3),
            "points_per_s": round(self.points_per_s, 1),
            "latency_ms": {f"p{q}": round(self.percentile_ms(q), 2) for q in (50, 95, 99, 100)},
        }


class _Edge:
    """One simulated edge: produces batches, keeps each until it is acknowledged."""

    def __init__(
        self, index: int, plan: LoadPlan, settings: UplinkMqttSection, report: LoadReport
    ) -> None:
        self.edge_id = f"{plan.edge_prefix}-{index}"
        self.plan = plan
        self.report = report
        client_id = f"{plan.edge_prefix}{plan.run}-{index}"
        self.transport = MqttTransport(
            settings.model_copy(update={"client_id": client_id}),
            edge_id=self.edge_id,
            timeout_s=plan.timeout_s,
        )
        self.tags = [tag_path(index, t) for t in range(plan.tags)]
        self.tag_index = np.repeat(np.arange(plan.tags, dtype=np.int32), plan.samples)
        self.seq = 0
        self.last_ts = 0
        self.rng = np.random.default_rng(index)

    def make_batch(self) -> tuple[int, bytes, int]:
        """The next batch: (seq, request body, when its newest value was produced)."""
        self.seq += 1
        now = max(now_ns(), self.last_ts + self.plan.samples)
        self.last_ts = now
        # samples 1 ns apart ending now: unique per tag, and "produced" is honest
        offsets = np.tile(np.arange(self.plan.samples - 1, -1, -1, dtype=np.int64), self.plan.tags)
        batch = PointBatch.from_columns(
            self.tags, self.tag_index, now - offsets, self.rng.random(len(self.tag_index))
        )
        stored = StoredBatch(self.seq, len(batch), now, encode_payload(batch))
        return self.seq, frame([stored], edge=self.edge_id, historical=False), now

    async def deliver(self, seq: int, body: bytes, produced_ns: int, deadline: float) -> None:
        """Send one batch until the platform answers that it is committed (or give up)."""
        report = self.report
        first = True
        while True:
            if not first:
                report.resends += 1
            first = False
            answer = await self.transport.post_batch(body)
            if answer.committed:
                report.acknowledged_batches += 1
                report.acknowledged_points += self.plan.batch_points
                report.duplicate_answers += answer.verdict is Verdict.DUPLICATE
                report.latencies_ms.append((now_ns() - produced_ns) / 1e6)
                return
            if answer.verdict is Verdict.REFUSED:
                report.refused += 1
                logger.warning("loadgen: %s batch %d refused: %s", self.edge_id, seq, answer.detail)
                return
            if time.monotonic() > deadline:
                report.unacknowledged += 1
                return
            await asyncio.sleep(answer.retry_after_s or _RETRY_S)


async def run_load(plan: LoadPlan, settings: UplinkMqttSection) -> LoadReport:
    """Play ``plan`` through the broker of ``settings``; return what the edges saw.

    Every simulated edge connects first (its session subscribes to its answers), then
    produces batches for ``duration_s`` at its share of ``rate``, at most ``window`` of
    them unanswered, and finally waits up to ``drain_s`` for the rest.
    """
    report = LoadReport()
    edges = [_Edge(i, plan, settings, report) for i in range(plan.edges)]
    try:
        for edge in edges:
            await edge.transport.start()
        async with asyncio.timeout(30):
            while not all(e.transport.stats().connected for e in edges):  # noqa: ASYNC110 - a flag only
                await asyncio.sleep(0.05)
        started = time.monotonic()
        stop_at = started + plan.duration_s
        async with asyncio.TaskGroup() as group:
            for edge in edges:
                group.create_task(_play(edge, stop_at, group), name=f"loadgen/{edge.edge_id}")
        report.elapsed_s = time.monotonic() - started
    finally:
        for edge in edges:
            with contextlib.suppress(Exception):
                await edge.transport.close()
    return report


async def _play(edge: _Edge, stop_at: float, group: asyncio.TaskGroup) -> None:
    plan = edge.plan
    slots = asyncio.Semaphore(plan.window)
    interval = plan.edges * plan.batch_points / plan.rate if plan.rate > 0 else 0.0
    deadline = stop_at + plan.drain_s
    next_at = time.monotonic()

    async def one(seq: int, body: bytes, produced: int) -> None:
        try:
            await edge.deliver(seq, body, produced, deadline)
        finally:
            slots.release()

    while time.monotonic() < stop_at:
        await slots.acquire()
        if interval:
            delay = next_at - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            next_at = max(next_at + interval, time.monotonic() - interval)
        if time.monotonic() >= stop_at:
            slots.release()
            break
        seq, body, produced = edge.make_batch()
        edge.report.batches += 1
        edge.report.points += plan.batch_points
        group.create_task(one(seq, body, produced), name=f"loadgen/{edge.edge_id}/{seq}")
