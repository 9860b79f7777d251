"""Drain the outbox to the platform: two lanes, a small window, acknowledgement by commit.

The policy, in the order it is applied:

1. **Tags first.** Metadata announced by the connectors is PUT before any batch.
2. **Live lane.** Batches appended in the last ``catch_up_after_s`` seconds are sent
   first, oldest of them first, so dashboards stay current while a backlog drains.
3. **Backlog lane.** The rest of the window is filled with the oldest waiting batches.
   A backlog batch is flagged ``historical`` when a newer batch already went out live
   (its values are older than what the platform has shown; alarms must not fire again).
   With ``coalesce_points`` set, consecutive backlog batches travel together in one
   request (one record batch per outbox batch, each with its own seq).
4. **Window.** At most ``window`` requests are in flight; while the platform is down,
   just one (a probe), so an outage costs one timeout, not ``window`` of them. A failed
   request means "down" only if no request sent after it has been answered since: on a
   flapping link the requests that got through keep the window open, and the requests
   that were in flight when the link dropped count as one failure, not ``window``
   steps of backoff.
5. **Acknowledgement.** A batch leaves the outbox only on a ``200`` (a duplicate
   counts: the platform has it). Nothing else — a socket write, a TCP ack — counts.
6. **Backpressure.** ``429``/``503`` pause sending for ``Retry-After`` plus up to 20 %
   jitter; transport errors and other server errors back off exponentially (capped,
   jittered). An outage is logged once when it starts and once when it ends.
7. **Refusal.** A batch refused as invalid (``400``/``413``/``415``/``422``) is tried
   again up to ``max_refusals`` times in all, then moved to quarantine; the batches
   behind it go on meanwhile. A coalesced request that is refused is split up and its
   batches sent alone, so one bad batch never takes its neighbours to quarantine.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from shopfloor.edge.buffer.base import Lane, OutboxError, OutboxFailed, StoredBatch
from shopfloor.edge.buffer.outbox import DurableOutbox
from shopfloor.edge.buffer.quarantine import Quarantine, QuarantinedBatch
from shopfloor.model import TagMeta
from shopfloor.runtime.backoff import Backoff
from shopfloor.runtime.clock import Clock, SystemClock

from .framing import frame
from .http import Answer, Verdict

__all__ = ["BatchTransport", "Sender", "SenderOptions", "SenderStats"]

logger = logging.getLogger(__name__)

_INLINE_FRAME_BYTES = 512 * 1024
_RATE_WINDOW_S = 10.0
_MAINTAIN_EVERY_S = 1.0


class BatchTransport(Protocol):
    """What the sender needs from a transport (HTTP today, MQTT later)."""

    async def post_batch(self, body: bytes) -> Answer:
        """Deliver one request body and classify the answer; never raise for the network."""

    async def put_tags(self, tags: Sequence[TagMeta]) -> Answer:
        """Register tag metadata."""

    async def put_status(self, status: Mapping[str, Any]) -> Answer:
        """Report the edge's status."""


@dataclass(frozen=True, slots=True)
class SenderOptions:
    """How the sender drains.

    Attributes:
        window: requests in flight at most.
        catch_up_after_s: batches older than this are backlog (sent after live ones).
        coalesce_points: join consecutive backlog batches into requests of up to this many
            points (0: one batch per request). Needs a platform that reads per-record seqs.
        coalesce_batches: at most this many batches per coalesced request.
        max_refusals: refusals (400/413/415/422) after which a batch goes to quarantine.
        retry: first and longest backoff delay after a transport error, seconds.
        retry_jitter: the most extra fraction added to a ``Retry-After`` wait.
        requeue_every_s: how often the quarantine's retry folder is checked.
    """

    window: int = 8
    catch_up_after_s: float = 2.0
    coalesce_points: int = 20_000
    coalesce_batches: int = 256
    max_refusals: int = 3
    retry: tuple[float, float] = (0.5, 30.0)
    retry_jitter: float = 0.2
    requeue_every_s: float = 5.0


@dataclass(slots=True)
class SenderStats:
    """What the sender did (since start).

    Attributes:
        requests: batch requests answered or failed.
        acked_batches: batches the platform committed (duplicates included).
        acked_points: their points.
        duplicates: batches the platform already had.
        historical_batches: batches sent flagged historical.
        refusals: refusals (400/413/415/422) received.
        quarantined: batches moved to quarantine.
        retry_later: 429/503 answers.
        failures: requests without an answer or with a server error.
        reconnects: times the platform became reachable again after an outage.
        down: whether the platform is unreachable right now.
        last_error: the last failure, for operators.
        send_rate_pps: points acknowledged per second over the last 10 s.
        ack_latency_ms_p50: median time from request to commit answer (last 1024).
        ack_latency_ms_p99: 99th percentile of the same.
    """

    requests: int = 0
    acked_batches: int = 0
    acked_points: int = 0
    duplicates: int = 0
    historical_batches: int = 0
    refusals: int = 0
    quarantined: int = 0
    retry_later: int = 0
    failures: int = 0
    reconnects: int = 0
    down: bool = False
    last_error: str | None = None
    send_rate_pps: float = 0.0
    ack_latency_ms_p50: float | None = None
    ack_latency_ms_p99: float | None = None


@dataclass(slots=True)
class _Job:
    batches: list[StoredBatch]
    historical: bool
    live: bool

    @property
    def seqs(self) -> list[int]:
        return [b.seq for b in self.batches]

    @property
    def points(self) -> int:
        return sum(b.points for b in self.batches)


@dataclass(slots=True)
class _Refusals:
    count: int = 0
    last: Answer | None = None
    first_ns: int = 0


class Sender:
    """Drains a :class:`DurableOutbox` through a :class:`BatchTransport`.

    Args:
        outbox: where batches wait.
        transport: how they travel.
        edge_id: written into every request.
        quarantine: where refused batches go (None: they stay, retried with backoff).
        options: the drain policy.
        clock: injected so tests can move wall-clock time (lanes, ages).
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
    ) -> None:
        self._outbox = outbox
        self._transport = transport
        self._edge_id = edge_id
        self._quarantine = quarantine
        self.options = options or SenderOptions()
        self._clock = clock or SystemClock()
        self._stats = SenderStats()
        self._wake = asyncio.Event()
        self._paused_until = 0.0
        self._down_since = 0.0
        self._answered_started = 0.0  # send time of the newest request that got an answer
        self._backoff = Backoff(initial=self.options.retry[0], maximum=self.options.retry[1])
        self._rng = random.Random()
        self._live_high = 0
        self._solo: set[int] = set()
        self._refused: dict[int, _Refusals] = {}
        self._tags: dict[str, TagMeta] = {}
        self._tags_pending = False
        self._latencies: deque[float] = deque(maxlen=1024)
        self._acks: deque[tuple[float, int]] = deque(maxlen=8192)
        self._last_maintain = 0.0
        self._last_retry_scan = 0.0
        self._requeueing = False
        outbox.add_listener(self._wake.set)

    # ----------------------------------------------------------------- public
    def announce(self, tags: Sequence[TagMeta]) -> None:
        """Queue tag metadata; it is sent before the next batch."""
        for tag in tags:
            self._tags[tag.path] = tag
        if tags:
            self._tags_pending = True
            self._wake.set()

    def stats(self) -> SenderStats:
        """The figures for health and status; cheap."""
        now = time.monotonic()
        while self._acks and now - self._acks[0][0] > _RATE_WINDOW_S:
            self._acks.popleft()
        points = sum(p for _, p in self._acks)
        self._stats.send_rate_pps = points / _RATE_WINDOW_S
        if self._latencies:
            p50, p99 = np.percentile(np.fromiter(self._latencies, dtype=float), [50, 99])
            self._stats.ack_latency_ms_p50 = float(p50)
            self._stats.ack_latency_ms_p99 = float(p99)
        self._stats.down = self._down
        return self._stats

    @property
    def _down(self) -> bool:
        return self._stats.down

    async def run(self) -> None:
        """Send until cancelled. In-flight requests are cancelled with it (their batches
        stay in the outbox and go again after a restart)."""
        inflight: set[asyncio.Task[None]] = set()
        try:
            async with asyncio.TaskGroup() as group:
                while True:
                    if self._outbox.failed is not None:
                        return
                    self._wake.clear()
                    try:
                        await self._housekeeping(group)
                    except OutboxFailed:
                        return  # fail-stop: the uplink reports it; nothing more to send
                    delay = self._paused_until - time.monotonic()
                    if delay > 0:
                        await self._sleep(delay)
                        continue
                    if self._tags_pending and not inflight and not await self._send_tags():
                        continue
                    capacity = 1 if self._down else self.options.window
                    free = capacity - len(inflight)
                    jobs = await self._next_jobs(free) if free > 0 else []
                    for job in jobs:
                        task = group.create_task(self._deliver(job), name="uplink/request")
                        inflight.add(task)
                        task.add_done_callback(inflight.discard)
                        task.add_done_callback(lambda _t: self._wake.set())
                    if not jobs or len(inflight) >= capacity:
                        await self._sleep(_MAINTAIN_EVERY_S)
        finally:
            for task in inflight:
                task.cancel()

    async def _sleep(self, seconds: float) -> None:
        """Sleep until woken (new batch, answer) or ``seconds`` passed."""
        # asyncio.timeout, not wait_for: Python 3.11's wait_for returns normally when the
        # wake-up and a cancellation arrive together, swallowing the cancellation, and the
        # sender then ran on until the supervisor gave up on stopping it (10 s)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(max(0.0, seconds)):
                await self._wake.wait()

    # --------------------------------------------------------------- choosing
    async def _next_jobs(self, free: int) -> list[_Job]:
        boundary = self._clock.now_ns() - int(self.options.catch_up_after_s * 1e9)
        jobs: list[_Job] = []
        for stored in await self._outbox.peek(free, lane=Lane.OLDEST, since_ns=boundary):
            jobs.append(_Job([stored], historical=False, live=True))
            self._live_high = max(self._live_high, stored.seq)
        free -= len(jobs)
        if free <= 0:
            return jobs
        per_job = self.options.coalesce_batches if self.options.coalesce_points > 0 else 1
        backlog = await self._outbox.peek(free * per_job, lane=Lane.OLDEST, before_ns=boundary)
        groups = self._group(backlog, free)
        used = {b.seq for g in groups for b in g}
        self._outbox.release(b.seq for b in backlog if b.seq not in used)
        for batches in groups:
            historical = batches[-1].seq < self._live_high
            jobs.append(_Job(batches, historical=historical, live=False))
        return jobs

    def _group(self, backlog: list[StoredBatch], jobs: int) -> list[list[StoredBatch]]:
        limit = self.options.coalesce_points
        groups: list[list[StoredBatch]] = []
        for stored in backlog:
            current = groups[-1] if groups else None
            joinable = (
                current is not None
                and limit > 0
                and stored.seq not in self._solo
                and current[-1].seq not in self._solo
                and len(current) < self.options.coalesce_batches
                and sum(b.points for b in current) + stored.points <= limit
            )
            if joinable and current is not None:
                current.append(stored)
            elif len(groups) < jobs:
                groups.append([stored])
            else:
                break
        return groups

    # --------------------------------------------------------------- sending
    async def _deliver(self, job: _Job) -> None:
        try:
            body = await self._frame(job)
            started = time.monotonic()
            answer = await self._transport.post_batch(body)
            self._stats.requests += 1
            await self._settle(job, answer, started)
        except OutboxError as err:  # the outbox failed or closed: leave the batches there
            logger.debug("uplink: cannot settle batches %s: %s", job.seqs, err)
        except asyncio.CancelledError:
            self._outbox.release(job.seqs)
            raise

    async def _frame(self, job: _Job) -> bytes:
        size = sum(len(b.payload) for b in job.batches)
        if size > _INLINE_FRAME_BYTES:
            return await asyncio.to_thread(
                frame,
                job.batches,
                edge=self._edge_id,
                historical=job.historical,
                outbox=self._outbox.outbox_id,
            )
        return frame(
            job.batches,
            edge=self._edge_id,
            historical=job.historical,
            outbox=self._outbox.outbox_id,
        )

    async def _settle(self, job: _Job, answer: Answer, started: float) -> None:
        elapsed_s = time.monotonic() - started
        if answer.committed:
            # counted before the outbox write: the platform has them whatever happens next
            self._up(started)
            self._stats.acked_batches += len(job.batches)
            self._stats.acked_points += job.points
            if answer.verdict is Verdict.DUPLICATE:
                self._stats.duplicates += len(job.batches)
            if job.historical:
                self._stats.historical_batches += len(job.batches)
            self._latencies.append(elapsed_s * 1000)
            self._acks.append((time.monotonic(), job.points))
            for seq in job.seqs:
                self._refused.pop(seq, None)
                self._solo.discard(seq)
            await self._outbox.ack(job.seqs)
            return
        if answer.verdict is Verdict.REFUSED:
            self._up(started)
            if not await self._refused_answer(job, answer):
                self._outbox.release(job.seqs)
            return
        self._outbox.release(job.seqs)
        if answer.verdict is Verdict.RETRY_LATER:
            self._stats.retry_later += 1
            wait = answer.retry_after_s if answer.retry_after_s is not None else None
            if wait is None:
                wait = self._backoff.next_delay()
            wait *= 1.0 + self._rng.uniform(0.0, self.options.retry_jitter)
            self._pause(wait, f"platform busy ({answer.detail[:120]})", outage=False)
        else:
            self._stats.failures += 1
            self._failed(started, answer)

    async def _refused_answer(self, job: _Job, answer: Answer) -> bool:
        """Count a refusal; return True if the batch went to quarantine."""
        self._stats.refusals += 1
        if len(job.batches) > 1:  # find the culprit: send them one by one
            self._solo.update(job.seqs)
            logger.info(
                "platform refused a coalesced request (%s): sending its batches alone",
                answer.detail[:200],
            )
            return False
        (stored,) = job.batches
        entry = self._refused.setdefault(stored.seq, _Refusals(first_ns=self._clock.now_ns()))
        entry.count += 1
        entry.last = answer
        if entry.count == 1:
            logger.warning("platform refused batch %d: %s", stored.seq, answer.detail[:300])
        if entry.count < self.options.max_refusals or self._quarantine is None:
            return False
        await self._to_quarantine(stored, answer, entry.count)
        return True

    async def _to_quarantine(self, stored: StoredBatch, answer: Answer, refusals: int) -> None:
        assert self._quarantine is not None
        meta = QuarantinedBatch(
            seq=stored.seq,
            edge=self._edge_id,
            points=stored.points,
            appended_ns=stored.appended_ns,
            refused_ns=self._clock.now_ns(),
            status=answer.status or 0,
            reason=answer.detail[:2000],
            refusals=refusals,
        )
        await self._outbox.run_io(self._quarantine.put, stored, meta)
        await self._outbox.quarantined([stored.seq])
        self._refused.pop(stored.seq, None)
        self._solo.discard(stored.seq)
        self._stats.quarantined += 1
        logger.error(
            "batch %d (%d points) refused %d times: moved to quarantine (%s)",
            stored.seq,
            stored.points,
            refusals,
            answer.detail[:200],
        )

    async def _send_tags(self) -> bool:
        tags = list(self._tags.values())
        started = time.monotonic()
        answer = await self._transport.put_tags(tags)
        if answer.committed:
            self._tags_pending = False
            self._up(started)
            return True
        if answer.verdict is Verdict.REFUSED:
            self._tags_pending = False
            logger.error("platform refused %d tags: %s", len(tags), answer.detail[:300])
            return True
        self._failed(started, answer)
        return False

    # ------------------------------------------------------------ transitions
    def _failed(self, started: float, answer: Answer) -> None:
        """A request sent at ``started`` got no usable answer: decide if the link is down."""
        reason = answer.detail[:200] or answer.verdict.value
        if self._answered_started > started:
            # A request sent after this one was answered: the link works (it flapped, or
            # this request alone was unlucky). Its batches go again at once.
            self._stats.last_error = reason
            return
        if self._stats.down and started < self._down_since:
            return  # in flight when the outage began: the same outage, already backing off
        self._pause(answer.retry_after_s or self._backoff.next_delay(), reason, outage=True)

    def _pause(self, seconds: float, reason: str, *, outage: bool) -> None:
        self._paused_until = max(self._paused_until, time.monotonic() + seconds)
        self._stats.last_error = reason
        if outage and not self._stats.down:
            logger.warning("platform unreachable (%s): batches wait in the outbox", reason)
            self._stats.down = True
            self._down_since = time.monotonic()
        elif not outage and not self._stats.down:
            logger.info("platform asks to wait %.1f s: %s", seconds, reason)

    def _up(self, started: float) -> None:
        """An answer came; only a request sent after the outage began proves recovery
        (a late answer to an older request says nothing about the link now)."""
        self._answered_started = max(self._answered_started, started)
        if self._stats.down and started < self._down_since:
            return
        self._backoff.reset()
        if self._stats.down:
            self._stats.down = False
            self._stats.reconnects += 1
            logger.info(
                "platform reachable again; %d batches waiting", self._outbox.stats().batches
            )

    # ---------------------------------------------------------- housekeeping
    async def _housekeeping(self, group: asyncio.TaskGroup) -> None:
        now = time.monotonic()
        if now - self._last_maintain >= _MAINTAIN_EVERY_S:
            self._last_maintain = now
            await self._outbox.maintain()
        every = self.options.requeue_every_s
        requeue_due = now - self._last_retry_scan >= every and not self._requeueing
        if self._quarantine is not None and requeue_due:
            self._last_retry_scan = now
            # Its own task: under stop-reading the append may wait for room, which only
            # this loop's acknowledgements make.
            self._requeueing = True
            group.create_task(self._requeue(), name="uplink/requeue")

    async def _requeue(self) -> None:
        """Append batches an operator sent back from quarantine."""
        assert self._quarantine is not None
        try:
            entries = await self._outbox.run_io(self._quarantine.retries)
            for meta, stem in entries:
                payload = await self._outbox.run_io(stem.with_suffix(".arrow").read_bytes)
                seq = await self._outbox.append(payload, points=meta.points)
                await self._outbox.run_io(self._quarantine.retried, stem)
                logger.info("batch %d back from quarantine as batch %d", meta.seq, seq)
        except (OutboxError, OSError) as err:
            logger.warning("quarantine: cannot requeue: %s", err)
        finally:
            self._requeueing = False

    def describe(self) -> Mapping[str, Any]:
        """The options, for logs."""
        return {
            "window": self.options.window,
            "catch_up_after_s": self.options.catch_up_after_s,
            "coalesce_points": self.options.coalesce_points,
            "max_refusals": self.options.max_refusals,
        }
