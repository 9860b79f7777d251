"""Configured control charts judged as data arrives; violations as events and alarms.

The monitor follows the live channel. For every ``[[analytics.spc]]`` chart with a fixed
baseline (``baseline_start``) it gathers the tag's Good points into subgroups as they
come, charts each finished subgroup against the baseline's limits and runs the chart's
rules over the last 15 plotted points (the longest pattern, Nelson's rule 7).

Each finished subgroup becomes one point of a derived tag, ``<tag>.spc.<chart>``, whose
value is the number of rules the subgroup completed (0: in control). That tag *is* the
event record: it is stored and charted like any tag, and a violation is a point above 0.
With ``alarm = true`` the composition root adds an alarm rule ``spc.<chart>`` (kind
``H``, limit 0.5) on that tag to the alarm engine (:func:`spc_alarm_rules`), so SPC
alarms take the ordinary path: ISA-18.2 states, journal, notifications, acknowledgement.
The alarm clears with the next subgroup in control. The monitor does not import the
ingest stage: it is handed a ``publish`` function (house rule 1, no reaching back).

A subgroup of ``subgroup_size`` points finishes with its last point; a time bucket
finishes when the first point of a later bucket arrives. Batches from an edge's backlog
(``historical``) are skipped, as the alarm engine skips them, and so are points not
newer than the chart's last one. Until the baseline is complete (its period not over,
or fewer than ``baseline_subgroups`` subgroups stored), subgroups are not judged and
the baseline is tried again at most every ``retry_s``. Charts without a fixed baseline
are only charted on request (``/api/v1/spc``), and logged once as not monitored.

Scaled out (``analytics.partitions``), ``owns`` says which charts this server judges, by
their tag's equipment, asked at every batch: a chart whose partition moved here starts
afresh with its next points (its baseline is read then), as after a restart.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Final

import numpy as np
import numpy.typing as npt

from shopfloor.config.spc import SpcChartConfig
from shopfloor.errors import IngestBusy, PayloadError, UnknownTagError
from shopfloor.model import LiveBatch, PointBatch, TagMeta
from shopfloor.model.points import is_good
from shopfloor.runtime.channels import Channel
from shopfloor.runtime.clock import Clock, SystemClock
from shopfloor.server.analytics.spc import (
    ChartKind,
    Limits,
    Subgroups,
    apply_limits,
    individuals,
    subgroups_by_bucket,
    subgroups_by_count,
)
from shopfloor.server.analytics.spc_rules import evaluate_rules
from shopfloor.server.analytics.spc_service import ChartSpec, baseline_limits, spec_from_config
from shopfloor.server.historian.base import Historian
from shopfloor.server.rules.engine import AlarmRule
from shopfloor.server.rules.partitions import equipment_of

__all__ = ["SpcEvent", "SpcMonitor", "event_tag", "spc_alarm_rules"]

logger = logging.getLogger(__name__)

TAIL: Final = 15
"""Plotted points kept per chart: the longest rule's pattern."""

Publish = Callable[[PointBatch], Awaitable[object]]
RegisterTags = Callable[[Sequence[TagMeta]], Awaitable[None]]


def event_tag(chart: SpcChartConfig) -> str:
    """The derived tag of a chart's violations: ``<tag>.spc.<name>``."""
    return f"{chart.tag}.spc.{chart.name}"


def spc_alarm_rules(charts: Sequence[SpcChartConfig]) -> list[AlarmRule]:
    """An alarm rule per chart with ``alarm = true``, on its derived tag."""
    return [
        AlarmRule(
            name=f"spc.{chart.name}",
            tag=event_tag(chart),
            kind="H",
            limit=0.5,
            priority=chart.priority,
            message=f"SPC {chart.name}: {{value:.0f}} rule(s) broken on {chart.tag}",
        )
        for chart in charts
        if chart.alarm
    ]


@dataclass(frozen=True, slots=True)
class SpcEvent:
    """One finished subgroup that broke rules.

    Attributes:
        chart: the chart's name.
        ts_ns: time of the subgroup's last point (the derived point's time).
        rules: the rules it completed (``beyond_limits`` for the R, S or MR chart).
        value: the plotted X̄ or individual.
    """

    chart: str
    ts_ns: int
    rules: tuple[str, ...]
    value: float


@dataclass
class _Chart:
    config: SpcChartConfig
    spec: ChartSpec
    tag: str
    limits: Limits | None = None
    tried_at: float = -math.inf
    waiting_logged: bool = False
    last_ts: int = -(2**63)
    pending_ts: list[int] = field(default_factory=list)
    pending_v: list[float] = field(default_factory=list)
    previous: tuple[int, float] | None = None
    x: deque[float] = field(default_factory=lambda: deque(maxlen=TAIL))
    center: deque[float] = field(default_factory=lambda: deque(maxlen=TAIL))
    sigma: deque[float] = field(default_factory=lambda: deque(maxlen=TAIL))
    owned: bool = False

    def restart(self) -> None:
        """Forget the running subgroup and tail (points were missed meanwhile)."""
        self.last_ts = -(2**63)
        self.pending_ts, self.pending_v = [], []
        self.previous = None
        self.x.clear()
        self.center.clear()
        self.sigma.clear()


class SpcMonitor:
    """Judge configured charts on live data (module docstring).

    Args:
        charts: the configured charts; those without ``baseline_start`` are skipped.
        historian: where baselines are read.
        publish: stores and publishes the derived points (the ingestor, in the server).
        register_tags: announces the derived tags' metadata, if given.
        clock: wall and monotonic time.
        retry_s: least time between two tries of an incomplete baseline.
        owns: whether this server judges the charts of the equipment at a path now
            (None: every chart; scaled out, :mod:`~.ownership`).
    """

    def __init__(
        self,
        charts: Sequence[SpcChartConfig],
        historian: Historian,
        *,
        publish: Publish,
        register_tags: RegisterTags | None = None,
        clock: Clock | None = None,
        retry_s: float = 60.0,
        owns: Callable[[str], bool] | None = None,
    ) -> None:
        self._historian = historian
        self._owns = owns
        self._publish = publish
        self._register = register_tags
        self._clock = clock or SystemClock()
        self.retry_s = retry_s
        """Least seconds between two tries of an incomplete baseline."""
        self._charts: list[_Chart] = []
        for config in charts:
            if config.baseline_start is None:
                logger.info(
                    "SPC chart %s has no fixed baseline: charted on request only", config.name
                )
                continue
            self._charts.append(_Chart(config, spec_from_config(config), event_tag(config)))
        self._by_tag: dict[str, list[_Chart]] = {}
        for chart in self._charts:
            self._by_tag.setdefault(chart.spec.tag, []).append(chart)
        self.events: deque[SpcEvent] = deque(maxlen=1000)
        """The latest violations, newest last (bounded: the derived tags keep them all)."""
        self.subgroups = 0
        self.dropped = 0
        self._busy_logged = False

    @property
    def monitored(self) -> list[str]:
        """Names of the charts judged on live data."""
        return [c.config.name for c in self._charts]

    def limits(self, name: str) -> Limits | None:
        """The baseline limits of a monitored chart, once known."""
        return next((c.limits for c in self._charts if c.config.name == name), None)

    async def start(self) -> None:
        """Announce the derived tags and compute every baseline that is complete."""
        if self._register is not None and self._charts:
            await self._register(
                [
                    TagMeta(
                        path=c.tag,
                        unit="rules",
                        description=f"SPC chart {c.config.name}: rules broken per subgroup "
                        f"of {c.spec.tag} (0: in control)",
                    )
                    for c in self._charts
                ]
            )
        for chart in self._charts:
            if self._owns is None:  # scaled out: read when its first subgroup is judged
                await self._load_baseline(chart)

    async def _load_baseline(self, chart: _Chart) -> None:
        chart.tried_at = self._clock.monotonic()
        try:
            chart.limits = await baseline_limits(
                self._historian, chart.spec, now_ns=self._clock.now_ns()
            )
        except (PayloadError, UnknownTagError) as err:
            if not chart.waiting_logged:  # log the transition, not every retry
                chart.waiting_logged = True
                logger.info("SPC chart %s: waiting for its baseline: %s", chart.config.name, err)
            return
        logger.info(
            "SPC chart %s: limits from %d baseline subgroups (centre %.6g, sigma %.6g)",
            chart.config.name,
            chart.limits.subgroups,
            chart.limits.center,
            chart.limits.sigma,
        )

    async def run(self, live: Channel[LiveBatch]) -> None:
        """Follow the live channel until cancelled."""
        async with live.subscribe("spc-monitor") as sub:
            async for item in sub:
                await self.process(item)

    async def process(self, live: LiveBatch) -> list[SpcEvent]:
        """Feed one live batch; the violations of the subgroups it finished."""
        if live.historical or not self._by_tag:
            return []
        batch = live.batch
        found: list[SpcEvent] = []
        derived: list[tuple[str, int, float]] = []
        for tag_index, path in enumerate(batch.tags):
            charts = self._by_tag.get(path)
            if not charts:
                continue
            mine = (batch.tag_index == tag_index) & is_good(batch.quality)
            ts = batch.ts[mine]
            values = np.asarray(batch.value[mine], dtype=np.float64)
            order = np.argsort(ts, kind="stable")
            for chart in charts:
                if not self._mine(chart):
                    continue
                for group in self._finished(chart, ts[order], values[order]):
                    if chart.limits is None and self._retry_due(chart):
                        await self._load_baseline(chart)
                    if chart.limits is None:
                        continue
                    event = self._judge(chart, group)
                    derived.append((chart.tag, int(group.end_ns[-1]), float(len(event.rules))))
                    if event.rules:
                        found.append(event)
        if derived:
            try:
                await self._publish(PointBatch.from_points([(t, ts, v, 0) for t, ts, v in derived]))
            except IngestBusy:  # the platform is behind: these points are lost, not the task
                self.dropped += len(derived)
                if not self._busy_logged:
                    self._busy_logged = True
                    logger.warning("SPC: ingest busy, %d derived points dropped", len(derived))
            else:
                self._busy_logged = False
        self.events.extend(found)
        return found

    def _mine(self, chart: _Chart) -> bool:
        """Whether this server judges ``chart`` now; one taken over starts afresh."""
        if self._owns is None:
            return True
        mine = self._owns(equipment_of(chart.spec.tag))
        if mine and not chart.owned:
            chart.restart()
        chart.owned = mine
        return mine

    def _retry_due(self, chart: _Chart) -> bool:
        return self._clock.monotonic() - chart.tried_at >= self.retry_s

    def _finished(
        self, chart: _Chart, ts: npt.NDArray[np.int64], values: npt.NDArray[np.float64]
    ) -> list[Subgroups]:
        """The subgroups these points finish, one row each, in time order."""
        out: list[Subgroups] = []
        for t, v in zip(ts.tolist(), values.tolist(), strict=True):
            if t <= chart.last_ts or not np.isfinite(v):
                continue
            chart.last_ts = t
            spec = chart.spec
            if spec.kind is ChartKind.IMR:
                if chart.previous is not None:
                    pair = individuals([chart.previous[0], t], [chart.previous[1], v])
                    out.append(pair.select(np.array([False, True])))
                else:
                    out.append(individuals([t], [v]))
                chart.previous = (t, v)
                continue
            bucket = spec.bucket_ns
            if (
                bucket is not None
                and chart.pending_ts
                and t // bucket != chart.pending_ts[0] // bucket
            ):
                group = subgroups_by_bucket(chart.pending_ts, chart.pending_v, bucket)
                if len(group):  # a bucket of one point is no subgroup
                    out.append(group)
                chart.pending_ts, chart.pending_v = [], []
            chart.pending_ts.append(t)
            chart.pending_v.append(v)
            size = spec.subgroup_size
            if size is not None and len(chart.pending_ts) == size:
                out.append(subgroups_by_count(chart.pending_ts, chart.pending_v, size))
                chart.pending_ts, chart.pending_v = [], []
        self.subgroups += len(out)
        return out

    def _judge(self, chart: _Chart, group: Subgroups) -> SpcEvent:
        assert chart.limits is not None
        points = apply_limits(chart.limits, group)
        chart.x.append(float(points.x[0]))
        chart.center.append(float(points.x_center[0]))
        chart.sigma.append(float(points.x_sigma[0]))
        last = len(chart.x) - 1
        broken = [
            v.rule
            for v in evaluate_rules(
                np.array(chart.x), np.array(chart.center), np.array(chart.sigma), chart.spec.rules
            )
            if v.index == last
        ]
        d, low, high = float(points.d[0]), float(points.d_lcl[0]), float(points.d_ucl[0])
        if np.isfinite(d) and (d > high or d < low):
            broken.append("beyond_limits")
        return SpcEvent(chart.config.name, int(group.end_ns[-1]), tuple(broken), chart.x[-1])
