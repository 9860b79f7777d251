"""Metrics: one value per machine per window, from aggregates of the machine's tags.

A metric (``[[metrics]]`` in a template, SiteWise's *metric*) is an expression over
aggregates, ``avg(power_kw)`` or ``last(part_count) - first(part_count)``, over tumbling
windows aligned to the epoch (a ``5m`` window starts at :00, :05, …). A window is
computed once it is over plus the metric's grace, so points that arrive a little late
still count, from the historian's bucketed aggregates (:meth:`Historian.read_buckets`,
the same numbers a history query gives; only Good points count).

**Timestamp: the window's start.** A metric's point is stamped with the start of the
window it describes, as the historian stamps its buckets and SiteWise its metrics, so a
metric lines up with a bucketed history query of its inputs over the same window, and
reading the metric over ``[t0, t1)`` gives exactly the windows that begin in it.

A window in which an aggregate has no value (no Good point of the tag) gives no point: a
gap, rather than a made-up number; ``count`` is 0 then, not missing. A result that is
not a finite number (a division by zero) gives no point either.

:class:`MetricJob` is the one task that computes them all. It writes the values through
the ingest path (``sink``), so they are stored and published live like any point (trends,
UNS, alarms). Windows that ended while the server was down, or more than
``MAX_CATCH_UP`` windows ago, are not computed afterwards; neither are points that
arrive after the window's grace.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import pyarrow as pa

from shopfloor.errors import ConfigError, ShopfloorError
from shopfloor.model import PointBatch, TagMeta, now_ns
from shopfloor.model.expressions import WindowExpression, compile_window_expression
from shopfloor.server.historian.base import Aggregate, BucketSize

__all__ = ["MAX_CATCH_UP", "Metric", "MetricJob", "MetricSource", "metric_points"]

logger = logging.getLogger(__name__)

MAX_CATCH_UP = 10
"""At most this many windows of one size are computed late in a row (after a stall);
older ones are skipped, with one log line."""


@dataclass(frozen=True, slots=True)
class Metric:
    """One machine's metric.

    Attributes:
        path: the tag its values are written to.
        expression: a window expression over tag names (``avg(power_kw)``).
        inputs: tag name in the expression → tag path.
        window_ns: the tumbling window's length.
        grace_ns: how long after a window's end it is computed.
    """

    path: str
    expression: str
    inputs: Mapping[str, str]
    window_ns: int
    grace_ns: int


@dataclass(frozen=True, slots=True)
class _Compiled:
    metric: Metric
    window: WindowExpression
    terms: tuple[tuple[str, Aggregate, str], ...]
    """Per aggregate call: its alias in the expression, the aggregate, the tag path."""


class MetricSource(Protocol):
    """What the job reads from the historian (a :class:`Historian` is one)."""

    async def flush(self) -> None:
        """Wait until every accepted batch is committed."""

    async def tags(self) -> list[TagMeta]:
        """Every known tag."""

    async def read_buckets(
        self,
        paths: Sequence[str],
        start_ns: int,
        end_ns: int,
        *,
        bucket: BucketSize,
        aggregates: Sequence[Aggregate],
        tz: str | None = None,
    ) -> pa.Table:
        """Bucketed aggregates of many tags (see :meth:`Historian.read_buckets`)."""


def compile_metric(metric: Metric) -> _Compiled:
    """Parse ``metric``'s expression.

    Raises:
        ConfigError: the expression does not compile over its inputs.
    """
    try:
        window = compile_window_expression(metric.expression, set(metric.inputs))
    except ValueError as err:
        raise ConfigError(f"metric {metric.path}: {err}") from err
    terms = tuple((alias, Aggregate(agg), metric.inputs[tag]) for alias, agg, tag in window.terms)
    return _Compiled(metric, window, terms)


def metric_points(metrics: Sequence[_Compiled], table: pa.Table, start_ns: int) -> PointBatch:
    """The metrics' values for the window starting at ``start_ns``, from a
    ``read_buckets`` table of that one window (paths missing from it have no values)."""
    paths = [str(p) for p in table.column("path").to_pylist()] if table.num_rows else []
    row = {p: i for i, p in enumerate(paths)}
    columns: dict[str, np.ndarray] = {}
    for name in table.column_names:
        if name in {a.value for a in Aggregate}:
            column = table.column(name).cast(pa.float64()).fill_null(np.nan)
            columns[name] = np.asarray(column.to_numpy(), dtype=np.float64)
    out_paths: list[str] = []
    values: list[float] = []
    for m in metrics:
        inputs: dict[str, np.ndarray] = {}
        for alias, aggregate, path in m.terms:
            i = row.get(path)
            value = np.nan if i is None else columns[aggregate.value][i]
            inputs[alias] = np.asarray([value])
        result = float(m.window.expression.values(inputs)[0])
        if np.isfinite(result):
            out_paths.append(m.metric.path)
            values.append(result)
    n = len(out_paths)
    return PointBatch.from_columns(out_paths, np.arange(n), np.full(n, start_ns), values)


class MetricJob:
    """Computes every metric of the plant as its windows close.

    Args:
        metrics: the plant's metrics.
        historian: where the aggregates are read.
        sink: where the values go (the ingest path).
        clock: the wall clock in UTC nanoseconds.

    Raises:
        ConfigError: an expression does not compile.
    """

    def __init__(
        self,
        metrics: Sequence[Metric],
        historian: MetricSource,
        sink: Callable[[PointBatch], Awaitable[object]],
        *,
        clock: Callable[[], int] = now_ns,
    ) -> None:
        self._historian = historian
        self._sink = sink
        self._clock = clock
        self._groups: dict[tuple[int, int], list[_Compiled]] = {}
        for metric in metrics:
            if metric.window_ns <= 0 or metric.grace_ns < 0:
                raise ConfigError(
                    f"metric {metric.path}: a window above 0 and a grace of 0 or more"
                )
            key = (metric.window_ns, metric.grace_ns)
            self._groups.setdefault(key, []).append(compile_metric(metric))
        self._failing = False
        self.windows = 0
        """Windows computed (of any size) since start."""

    def __len__(self) -> int:
        return sum(len(g) for g in self._groups.values())

    async def run(self) -> None:
        """Compute windows as they become due, until cancelled."""
        if not self._groups:
            return
        now = self._clock()
        # the window holding now - grace is the first whose end + grace is still to come
        starts = {(w, g): (now - g) // w * w for (w, g) in self._groups}
        while True:
            key = min(starts, key=lambda k: starts[k] + k[0] + k[1])
            window, grace = key
            due = starts[key] + window + grace
            delay = (due - self._clock()) / 1e9
            if delay > 0:
                # a second at most: a data clock may run faster than the wall (a demo)
                await asyncio.sleep(min(delay, 1.0))
                continue
            behind = (self._clock() - grace) // window * window - starts[key]
            if behind > MAX_CATCH_UP * window:
                skipped = behind // window - MAX_CATCH_UP
                logger.warning(
                    "metrics: %d windows of %d s skipped (the server stalled)",
                    skipped,
                    window // 10**9,
                )
                starts[key] += skipped * window
            await self.compute(window, grace, starts[key])
            starts[key] += window

    async def compute(self, window_ns: int, grace_ns: int, start_ns: int) -> PointBatch:
        """Compute and send the metrics of window ``window_ns`` (grace ``grace_ns``)
        starting at ``start_ns``; return what was sent. A historian that fails is logged
        once (and its recovery once) and the window is skipped."""
        metrics = self._groups.get((window_ns, grace_ns), [])
        try:
            batch = await self._read(metrics, window_ns, start_ns)
            if len(batch):
                await self._sink(batch)
        except ShopfloorError as err:
            if not self._failing:
                self._failing = True
                logger.warning("metrics: a window could not be computed: %s", err)
            return PointBatch.empty()
        if self._failing:
            self._failing = False
            logger.info("metrics are computed again")
        self.windows += 1
        return batch

    async def _read(
        self, metrics: Sequence[_Compiled], window_ns: int, start_ns: int
    ) -> PointBatch:
        await self._historian.flush()  # what was accepted before the window closed counts
        known = {t.path for t in await self._historian.tags()}
        paths = sorted({p for m in metrics for _, _, p in m.terms if p in known})
        if not paths:
            return PointBatch.empty()
        aggregates = sorted({a for m in metrics for _, a, _ in m.terms}, key=list(Aggregate).index)
        table = await self._historian.read_buckets(
            paths, start_ns, start_ns + window_ns, bucket=window_ns, aggregates=aggregates
        )
        return metric_points(metrics, table, start_ns)
