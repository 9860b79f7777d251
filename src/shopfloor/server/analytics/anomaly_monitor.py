"""Anomaly scores as data arrives, and remaining useful life refreshed from the historian.

The monitor follows the live channel as :class:`~.spc_monitor.SpcMonitor` does. Each
machine with a ``state`` tag and tags matching ``[analytics.anomaly] tags`` gets a
:class:`~.anomaly.MachineDetector`. A live batch's points of those tags become rows (one
per timestamp); a row is watched when the machine has been running (``state`` =
``running_state``) for ``settle``; the detectors score it, then learn it.

The largest score of the batch becomes one point of the derived tag
``<equipment>/anomaly_score`` (above 1: anomalous, whichever detector said so; 1000
marks a Bad point of a watched tag, a failed sensor). That tag is the event record,
stored and charted like any tag. With ``alarm = true`` the composition root adds the
alarm rule ``anomaly.<equipment id>`` (kind ``H``, limit 1) on it
(:func:`anomaly_alarm_rules`), so anomalies take the ordinary alarm path. The latest
events are also kept in memory (bounded) for ``GET /api/v1/anomaly``.

RUL: every ``[analytics.rul] interval`` the monitor reads each machine's indicator and
``state`` over ``history`` from the historian and runs
:func:`~.rul.estimate_rul_running` in a worker thread; the answers wait for
``GET /api/v1/rul``. The detectors' arithmetic runs in a worker thread too (house rule
4); one task owns each loop, and only it touches the detectors.

Scaled out (``analytics.partitions``), ``owns`` says which machines this server scores,
asked at every batch, so their score points are published once: a machine whose
partition moved here starts with a fresh detector (it learns for ``min_points`` again),
as after a restart. It then also stores each score's cause as ``<equipment>/anomaly_cause``
(:func:`cause_code`), so that every server can answer the latest scores and events from
the historian (:mod:`~.anomaly_stored`). RUL is estimated on every server still: its
answers live in memory for ``GET /api/v1/rul`` of whichever server is asked, and it
publishes nothing.
"""

from __future__ import annotations

import asyncio
import fnmatch
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from shopfloor.config.anomaly import AnomalySection, RulSection
from shopfloor.errors import IngestBusy, UnknownTagError
from shopfloor.model import LiveBatch, PointBatch, TagMeta
from shopfloor.model.points import is_good
from shopfloor.runtime.channels import Channel
from shopfloor.runtime.clock import Clock, SystemClock
from shopfloor.server.analytics.anomaly import DetectorSettings, MachineDetector, settled
from shopfloor.server.analytics.rul import NoEstimate, RulEstimate, estimate_rul_running
from shopfloor.server.historian.base import Historian
from shopfloor.server.rules.engine import AlarmRule

__all__ = [
    "AnomalyEvent",
    "AnomalyMonitor",
    "RulAnswer",
    "WatchedMachine",
    "anomaly_alarm_rules",
    "cause_code",
    "cause_name",
    "cause_tag",
    "score_tag",
]

logger = logging.getLogger(__name__)

_RETRY_S = 10.0
"""How soon RUL is tried again while a machine's tags are not in the historian yet."""

BAD_SCORE: Final = 1000.0
"""The score stored for a Bad point of a watched tag (a failed sensor)."""
SCORE_TAG: Final = "anomaly_score"
CAUSE_TAG: Final = "anomaly_cause"
_DETECTORS: Final = ("none", "z", "ewma", "mahalanobis", "bad")

Publish = Callable[[PointBatch], Awaitable[object]]
RegisterTags = Callable[[Sequence[TagMeta]], Awaitable[None]]


def score_tag(equipment: str) -> str:
    """The derived tag of a machine's anomaly score."""
    return f"{equipment}/{SCORE_TAG}"


def cause_tag(equipment: str) -> str:
    """The derived tag of what gave a machine's score (scaled out, :func:`cause_code`)."""
    return f"{equipment}/{CAUSE_TAG}"


def cause_code(detector: str, column: int | None) -> float:
    """A score's cause as a number: ``1000 × detector + watched tag's column + 1`` (0: no
    tag), the detectors numbered ``none``, ``z``, ``ewma``, ``mahalanobis``, ``bad``."""
    return float(1000 * _DETECTORS.index(detector) + (0 if column is None else column + 1))


def cause_name(code: float, names: Sequence[str]) -> str:
    """The cause (``z vibration_rms``, ``bad spindle_temp``) of a :func:`cause_code`, for a
    machine whose watched tags are called ``names``; ``?`` for a code it cannot have."""
    detector, column = divmod(int(code), 1000)
    if not 0 <= detector < len(_DETECTORS) or column > len(names):
        return "?"
    return _DETECTORS[detector] if column == 0 else f"{_DETECTORS[detector]} {names[column - 1]}"


@dataclass(frozen=True, slots=True)
class WatchedMachine:
    """A machine the monitor covers.

    Attributes:
        id: the equipment's id.
        path: the equipment's path.
        tags: paths of its watched tags.
    """

    id: str
    path: str
    tags: tuple[str, ...]

    @property
    def state(self) -> str:
        """Path of its ``state`` tag."""
        return f"{self.path}/state"

    @property
    def names(self) -> tuple[str, ...]:
        """Names of its watched tags (their last path segment)."""
        return tuple(p.rsplit("/", 1)[1] for p in self.tags)


def watched_machines(
    machines: Sequence[tuple[str, str]], tag_paths: Sequence[str], patterns: Sequence[str]
) -> list[WatchedMachine]:
    """The machines (``(id, path)`` pairs) with tags whose names match ``patterns``."""
    out = []
    for machine_id, path in machines:
        prefix = path + "/"
        mine = tuple(
            p
            for p in tag_paths
            if p.startswith(prefix)
            and "/" not in p[len(prefix) :]
            and p[len(prefix) :] not in (SCORE_TAG, CAUSE_TAG)
            and any(fnmatch.fnmatchcase(p[len(prefix) :], pat) for pat in patterns)
        )
        if mine:
            out.append(WatchedMachine(machine_id, path, mine))
    return out


def anomaly_alarm_rules(
    section: AnomalySection, machines: Sequence[WatchedMachine]
) -> list[AlarmRule]:
    """An alarm rule per watched machine with ``alarm = true``, on its score tag."""
    if not (section.enabled and section.alarm):
        return []
    return [
        AlarmRule(
            name=f"anomaly.{m.id}",
            tag=score_tag(m.path),
            kind="H",
            limit=1.0,
            priority=section.priority,
            message=f"Anomaly on {m.id}: score {{value:.1f}} (1 is the threshold)",
        )
        for m in machines
    ]


@dataclass(frozen=True, slots=True)
class AnomalyEvent:
    """A batch of rows on one machine that scored above 1.

    Attributes:
        equipment: the machine's path.
        ts_ns: time of the highest-scoring row.
        score: that score (``BAD_SCORE`` for a Bad point).
        cause: the detector and tag that gave it (``z vibration_rms``, ``bad spindle_temp``).
    """

    equipment: str
    ts_ns: int
    score: float
    cause: str


@dataclass(frozen=True, slots=True)
class RulAnswer:
    """The latest RUL of a machine: the estimate or why there is none, and when."""

    equipment: str
    indicator: str
    computed_ns: int
    result: RulEstimate | NoEstimate


@dataclass
class _Machine:
    spec: WatchedMachine
    detector: MachineDetector
    names: tuple[str, ...]
    state: float = float("nan")
    since: int | None = None
    last_ts: int = -(2**63)
    owned: bool = False


class AnomalyMonitor:
    """Score live data per machine and refresh RUL estimates (module docstring).

    Args:
        anomaly: the ``[analytics.anomaly]`` settings.
        rul: the ``[analytics.rul]`` settings.
        machines: the machines to cover (:func:`watched_machines`).
        rul_machines: ``(id, path)`` of the machines whose RUL is estimated.
        historian: where RUL histories are read.
        publish: stores and publishes the score points (the ingestor, in the server).
        register_tags: announces the score tags' metadata, if given.
        clock: wall time.
        owns: whether this server scores the machine at an equipment path now (None:
            every machine; scaled out, :mod:`~.ownership`).
    """

    def __init__(
        self,
        anomaly: AnomalySection,
        rul: RulSection,
        machines: Sequence[WatchedMachine],
        *,
        rul_machines: Sequence[tuple[str, str]] = (),
        historian: Historian,
        publish: Publish,
        register_tags: RegisterTags | None = None,
        clock: Clock | None = None,
        owns: Callable[[str], bool] | None = None,
    ) -> None:
        self.anomaly = anomaly
        self._owns = owns
        self.rul = rul
        self._historian = historian
        self._publish = publish
        self._register = register_tags
        self._clock = clock or SystemClock()
        self._settings = DetectorSettings(
            window=anomaly.window,
            refresh=anomaly.refresh,
            min_points=anomaly.min_points,
            z_threshold=anomaly.z_threshold,
            ewma_lambda=anomaly.ewma_lambda,
            ewma_limit=anomaly.ewma_limit,
            mahalanobis_alpha=anomaly.mahalanobis_alpha,
            direction=anomaly.direction,
        )
        self._machines: list[_Machine] = []
        if anomaly.enabled:
            for spec in machines:
                self._machines.append(_Machine(spec, self._detector(spec.names), spec.names))
        self._by_tag: dict[str, list[_Machine]] = {}
        for m in self._machines:
            for path in (*m.spec.tags, m.spec.state):
                self._by_tag.setdefault(path, []).append(m)
        self._rul_machines = list(rul_machines) if rul.enabled else []
        self.events: deque[AnomalyEvent] = deque(maxlen=1000)
        """The latest anomalies, newest last (bounded: the score tags keep them all)."""
        self.latest: dict[str, tuple[int, float, str]] = {}
        """Per machine path: time, score and cause of its last published score."""
        self.ruls: dict[str, RulAnswer] = {}
        self._rul_waiting = False  # a machine had no data yet at the last refresh
        """Per machine path: its latest RUL answer."""
        self.dropped = 0
        self._busy_logged = False

    def _detector(self, names: tuple[str, ...]) -> MachineDetector:
        limits = [self.anomaly.ewma_limits.get(n, self.anomaly.ewma_limit) for n in names]
        return MachineDetector(len(names), self._settings, ewma_limits=limits)

    def _mine(self, m: _Machine) -> bool:
        """Whether this server scores ``m`` now; one taken over starts afresh."""
        if self._owns is None:
            return True
        mine = self._owns(m.spec.path)
        if mine and not m.owned:
            m.detector = self._detector(m.names)
            m.state, m.since, m.last_ts = float("nan"), None, -(2**63)
        m.owned = mine
        return mine

    @property
    def machines(self) -> list[WatchedMachine]:
        """The machines scored."""
        return [m.spec for m in self._machines]

    @property
    def rul_machines(self) -> list[tuple[str, str]]:
        """``(id, path)`` of the machines whose RUL is estimated."""
        return list(self._rul_machines)

    @property
    def partitioned(self) -> bool:
        """Scaled out: this server scores some machines only, and stores each score's cause
        beside it, so every server answers from the historian (:mod:`~.anomaly_stored`)."""
        return self._owns is not None

    async def start(self) -> None:
        """Announce the score tags (and, scaled out, the cause tags)."""
        if self._register is not None and self._machines:
            metas = [
                TagMeta(
                    path=score_tag(m.spec.path),
                    unit="",
                    description=f"Anomaly score of {m.spec.id} (above 1: anomalous; "
                    f"{BAD_SCORE:g}: a failed sensor)",
                )
                for m in self._machines
            ]
            if self.partitioned:
                metas += [
                    TagMeta(
                        path=cause_tag(m.spec.path),
                        unit="",
                        description=f"What gave the anomaly score of {m.spec.id} "
                        "(1000 × detector + tag column + 1, see docs/scale-out.md)",
                    )
                    for m in self._machines
                ]
            await self._register(metas)

    async def run(self, live: Channel[LiveBatch]) -> None:
        """Follow the live channel until cancelled."""
        async with live.subscribe("anomaly-monitor") as sub:
            async for item in sub:
                await self.process(item)

    async def process(self, live: LiveBatch) -> list[AnomalyEvent]:
        """Score one live batch; the anomalies it held."""
        if live.historical or not self._by_tag:
            return []
        batch = live.batch
        if not any(path in self._by_tag for path in batch.tags):
            return []
        machines = [m for m in self._machines if self._mine(m)]
        if not machines:
            return []
        points, found = await asyncio.to_thread(self._score, batch, machines)
        if points:
            try:
                await self._publish(PointBatch.from_points(points))
            except IngestBusy:  # the platform is behind: these points are lost, not the task
                self.dropped += len(points)
                if not self._busy_logged:
                    self._busy_logged = True
                    logger.warning("anomaly: ingest busy, %d score points dropped", len(points))
            else:
                self._busy_logged = False
        self.events.extend(found)
        return found

    def _score(
        self, batch: PointBatch, machines: Sequence[_Machine]
    ) -> tuple[list[tuple[str, int, float, int]], list[AnomalyEvent]]:
        index = {path: i for i, path in enumerate(batch.tags)}
        points: list[tuple[str, int, float, int]] = []
        found: list[AnomalyEvent] = []
        for m in machines:
            got = self._rows(m, batch, index)
            if got is None:
                continue
            ts, x, bad = got
            scores = m.detector.learn_score(x, bad)
            if np.isnan(scores.score).all():
                continue
            best = int(np.nanargmax(scores.score))
            value = min(float(scores.score[best]), BAD_SCORE)
            detector, column = m.detector.describe(int(scores.cause[best]))
            if detector == "bad":
                column = int(np.flatnonzero(bad[best])[0])
            cause = detector if column is None else f"{detector} {m.names[column]}"
            at = int(ts[best])
            points.append((score_tag(m.spec.path), at, value, 0))
            if self.partitioned:  # for the servers that do not score it (anomaly_stored)
                points.append((cause_tag(m.spec.path), at, cause_code(detector, column), 0))
            self.latest[m.spec.path] = (at, value, cause)
            if value > 1.0:
                found.append(AnomalyEvent(m.spec.path, at, value, cause))
        return points, found

    def _rows(
        self, m: _Machine, batch: PointBatch, index: dict[str, int]
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64], npt.NDArray[np.bool_]] | None:
        """The batch's rows of a machine: times, watched values (NaN unless watched), Bad."""
        state_i = index.get(m.spec.state)
        state_ts = state_v = np.empty(0)
        if state_i is not None:
            mine = (batch.tag_index == state_i) & is_good(batch.quality)
            order = np.argsort(batch.ts[mine], kind="stable")
            state_ts, state_v = batch.ts[mine][order], batch.value[mine][order]
        cols = [index.get(p) for p in m.spec.tags]
        present = [c for c in cols if c is not None]
        if not present:
            if len(state_v):
                m.state = float(state_v[-1])
            return None
        in_machine = np.isin(batch.tag_index, present) & (batch.ts > m.last_ts)
        ts = np.unique(batch.ts[in_machine])
        if not len(ts):
            return None
        k = len(cols)
        x = np.full((len(ts), k), np.nan)
        bad = np.zeros((len(ts), k), dtype=bool)
        for j, c in enumerate(cols):
            if c is None:
                continue
            sel = (batch.tag_index == c) & (batch.ts > m.last_ts)
            rows = np.searchsorted(ts, batch.ts[sel])
            good = is_good(batch.quality[sel])
            x[rows[good], j] = batch.value[sel][good]
            bad[rows[~good], j] = True
        # state at each row: the last state point at or before it, else the carried one
        at = np.searchsorted(state_ts, ts, side="right") - 1
        state = np.where(at >= 0, state_v[np.maximum(at, 0)] if len(state_v) else m.state, m.state)
        if len(state_v):
            m.state = float(state_v[-1])
        running = state == self.anomaly.running_state
        watch, m.since = settled(running, ts, m.since, self.anomaly.settle_ns)
        x[~watch] = np.nan
        m.last_ts = int(ts[-1])
        return ts, x, bad

    # ------------------------------------------------------------------ RUL
    async def run_rul(self) -> None:
        """Refresh every machine's RUL each ``interval`` until cancelled.

        While a machine's tags are not in the historian yet (a server started before its
        edges, a demo before its first points) the refresh is tried again every
        :data:`_RETRY_S` instead of leaving "no tag" standing for a whole interval.
        """
        while True:
            await self.refresh_rul()
            wait = self.rul.interval_s
            await self._clock.sleep(min(wait, _RETRY_S) if self._rul_waiting else wait)

    async def refresh_rul(self) -> None:
        """Read each machine's indicator and state, and estimate its RUL off the loop."""
        now = self._clock.now_ns()
        since = now - self.rul.history_ns
        self._rul_waiting = False
        for machine_id, path in self._rul_machines:
            indicator = f"{path}/{self.rul.indicator}"
            try:
                values = await self._historian.read_raw(indicator, since, now, limit=2_000_000)
                states = await self._historian.read_raw(
                    f"{path}/state", since, now, limit=2_000_000
                )
            except UnknownTagError as err:
                result: RulEstimate | NoEstimate = NoEstimate(f"no tag {err.path!r}")
                self._rul_waiting = True
            else:
                self._rul_waiting |= values.num_rows == 0
                result = await asyncio.to_thread(self._estimate, values, states, since, now)
            self.ruls[path] = RulAnswer(path, self.rul.indicator, now, result)
            logger.debug("RUL of %s: %s", machine_id, result)

    def _estimate(
        self, values: pa.Table, states: pa.Table, since: int, now: int
    ) -> RulEstimate | NoEstimate:
        ts = values.column("ts").cast(pa.int64()).to_numpy()
        v = values.column("value").to_numpy(zero_copy_only=False).astype(np.float64)
        good = is_good(values.column("quality").to_numpy())
        s_ts = states.column("ts").cast(pa.int64()).to_numpy()
        s_v = states.column("value").to_numpy(zero_copy_only=False).astype(np.float64)
        if not len(ts):
            return NoEstimate(f"no {self.rul.indicator} points in the history")
        at = np.searchsorted(s_ts, ts, side="right") - 1
        state = np.where(at >= 0, s_v[np.maximum(at, 0)] if len(s_v) else np.nan, np.nan)
        keep = good & (state == self.rul.running_state) & np.isfinite(v)
        period = int(np.median(np.diff(ts))) if len(ts) > 1 else 10**9
        return estimate_rul_running(
            ts[keep],
            v[keep],
            now_ns=now,
            since_ns=since,
            period_ns=max(period, 1),
            threshold=self.rul.threshold,
            bucket_s=self.rul.bucket_s,
            min_count=max(1, round(self.rul.bucket_s * 1e9 / max(period, 1) / 2)),
            model=self.rul.model,
            confidence=self.rul.confidence,
            min_points=self.rul.min_points,
        )
