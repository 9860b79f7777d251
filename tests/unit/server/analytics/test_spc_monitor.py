"""The live SPC monitor against the same chart computed at once from stored points.

Feeding a series to the monitor in arbitrary batches must flag, subgroup by subgroup, the
same rules as :func:`chart_from_points` over the whole series with the same baseline
(the textbook tests of the computation itself are in test_spc.py).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pytest

from shopfloor.config.spc import SpcChartConfig
from shopfloor.model import LiveBatch, PointBatch, Quality
from shopfloor.server.analytics.spc_monitor import SpcMonitor, event_tag, spc_alarm_rules
from shopfloor.server.analytics.spc_service import chart_from_points, spec_from_config
from shopfloor.server.historian.duckdb import DuckDBHistorian
from shopfloor.testing.clock import ManualClock

from .test_spc import PISTON_RINGS

TAG = "acme/p1/machining/l1/c1/lathe-1/ring_diameter"
T0 = datetime(2026, 3, 2, 6, tzinfo=UTC)
T0_NS = int(T0.timestamp()) * 10**9
S = 10**9
BASELINE = np.array(PISTON_RINGS).ravel()


@pytest.fixture
async def historian() -> AsyncIterator[DuckDBHistorian]:
    h = DuckDBHistorian(None, flush_interval_s=0.05)
    await h.start()
    yield h
    await h.close()


def _clock() -> ManualClock:
    return ManualClock(now_ns=T0_NS + 86_400 * S)  # a day after the data starts


def _batch(ts: np.ndarray[Any, Any], values: np.ndarray[Any, Any]) -> PointBatch:
    return PointBatch.from_columns([TAG], np.zeros(ts.size), ts, values)


async def _store(
    h: DuckDBHistorian, ts: np.ndarray[Any, Any], values: np.ndarray[Any, Any]
) -> None:
    await h.write(_batch(ts, values))
    await h.flush()


def _chart(**kw: Any) -> SpcChartConfig:
    settings: dict[str, Any] = {
        "name": "rings",
        "tag": TAG,
        "kind": "xbar_r",
        "subgroup_size": 5,
        "baseline_start": T0,
        "baseline_subgroups": 25,
        "rules": ["WE1", "WE2", "WE3", "WE4", "N2", "N3"],
        "alarm": True,
        "priority": "high",
    }
    settings.update(kw)
    return SpcChartConfig(**settings)


class Sink:
    def __init__(self) -> None:
        self.batches: list[PointBatch] = []

    async def __call__(self, batch: PointBatch) -> None:
        self.batches.append(batch)

    def points(self) -> list[tuple[str, int, float]]:
        return [
            (str(b.tags[int(i)]), int(t), float(v))
            for b in self.batches
            for i, t, v in zip(b.tag_index, b.ts, b.value, strict=True)
        ]


async def _feed(
    monitor: SpcMonitor, ts: np.ndarray[Any, Any], values: np.ndarray[Any, Any]
) -> None:
    rng = np.random.default_rng(1)
    cuts = np.sort(rng.choice(np.arange(1, ts.size), size=min(9, ts.size - 1), replace=False))
    for part_ts, part_v in zip(np.split(ts, cuts), np.split(values, cuts), strict=True):
        await monitor.process(LiveBatch(_batch(part_ts, part_v)))


def _expected(config: SpcChartConfig, ts: Any, values: Any, baseline: Any) -> dict[int, list[str]]:
    """Rules broken per subgroup index by the whole-series computation."""
    spec = spec_from_config(config)
    body = chart_from_points(spec, ts, values, baseline, start_ns=0, end_ns=1)
    out: dict[int, list[str]] = {i: [] for i in range(len(body["points"]["x"]))}
    for v in body["violations"]:
        out[v["index"]].append(v["rule"])
    return out


async def test_streaming_subgroups_flag_what_the_whole_series_flags(
    historian: DuckDBHistorian,
) -> None:
    base_ts = T0_NS + np.arange(BASELINE.size) * S
    await _store(historian, base_ts, BASELINE)
    rng = np.random.default_rng(4)
    later = np.concatenate([rng.normal(74.001, 0.01, 100), rng.normal(74.02, 0.01, 100)])
    later_ts = T0_NS + (BASELINE.size + np.arange(later.size)) * S
    sink = Sink()
    config = _chart()
    monitor = SpcMonitor([config], historian, publish=sink, clock=_clock())
    await monitor.start()
    limits = monitor.limits("rings")
    assert limits is not None
    assert round(limits.center, 5) == 74.00118
    await _feed(monitor, later_ts, later)
    expected = _expected(config, later_ts, later, (base_ts, BASELINE))
    derived = sink.points()
    assert [p[0] for p in derived] == [event_tag(config)] * 40
    assert [p[1] for p in derived] == (later_ts[4::5]).tolist()
    assert [p[2] for p in derived] == [float(len(expected[i])) for i in range(40)]
    flagged = {e.ts_ns: sorted(e.rules) for e in monitor.events}
    assert flagged == {
        int(later_ts[5 * i + 4]): sorted(rules) for i, rules in expected.items() if rules
    }
    assert len(flagged) > 10  # the shift of two sigma is seen


@pytest.mark.parametrize(
    "settings",
    [
        {"kind": "imr", "subgroup_size": None, "baseline_subgroups": 60},
        {"kind": "xbar_s", "subgroup_size": None, "bucket": "10s", "baseline_subgroups": 12},
    ],
    ids=["imr", "bucket"],
)
async def test_imr_and_buckets_stream_like_the_whole_series(
    historian: DuckDBHistorian, settings: dict[str, Any]
) -> None:
    rng = np.random.default_rng(8)
    base_ts = T0_NS + np.cumsum(rng.integers(1, 4, 200)) * S
    base = rng.normal(10.0, 1.0, 200)
    await _store(historian, base_ts, base)
    later_ts = base_ts[-1] + np.cumsum(rng.integers(1, 4, 300)) * S
    later = rng.normal(10.0, 1.0, 300) + np.linspace(0, 3, 300)  # a drift
    config = _chart(**settings)
    sink = Sink()
    monitor = SpcMonitor([config], historian, publish=sink, clock=_clock())
    await monitor.start()
    await _feed(monitor, later_ts, later)
    expected = _expected(config, later_ts, later, (base_ts, base))
    counts = [p[2] for p in sink.points()]
    if config.kind == "imr":
        assert counts == [float(len(expected[i])) for i in range(len(expected))]
    else:  # the last bucket is still open
        assert counts == [float(len(expected[i])) for i in range(len(expected) - 1)]
    assert sum(counts) > 0


async def test_waits_for_its_baseline_and_skips_backlog_and_bad_points(
    historian: DuckDBHistorian,
) -> None:
    clock = _clock()
    sink = Sink()
    monitor = SpcMonitor([_chart()], historian, publish=sink, clock=clock, retry_s=30)
    await monitor.start()  # the tag does not exist yet
    assert monitor.limits("rings") is None
    ts = T0_NS + np.arange(BASELINE.size) * S
    await monitor.process(LiveBatch(_batch(ts, BASELINE)))  # not stored yet: not judged
    assert sink.batches == []
    await _store(historian, ts, BASELINE)
    later_ts = ts[-1] + (1 + np.arange(10)) * S
    await monitor.process(LiveBatch(_batch(later_ts[:5], BASELINE[:5])))
    assert monitor.limits("rings") is None  # retried only every 30 s
    clock.advance(31)
    await monitor.process(LiveBatch(_batch(later_ts[5:], BASELINE[5:10])))
    assert monitor.limits("rings") is not None
    assert len(sink.points()) == 1
    old = LiveBatch(_batch(later_ts[-1] + (1 + np.arange(5)) * S, BASELINE[:5]), historical=True)
    await monitor.process(old)
    stale = _batch(later_ts[:5], BASELINE[:5])  # not newer than what was judged
    await monitor.process(LiveBatch(stale))
    bad = PointBatch.from_columns(
        [TAG],
        np.zeros(5),
        later_ts[-1] + (10 + np.arange(5)) * S,
        BASELINE[:5],
        np.full(5, int(Quality.BAD), np.uint32),
    )
    await monitor.process(LiveBatch(bad))
    assert len(sink.points()) == 1


async def test_charts_without_a_fixed_baseline_are_not_monitored(
    historian: DuckDBHistorian,
) -> None:
    free = _chart(name="free", baseline_start=None)
    monitor = SpcMonitor([free, _chart()], historian, publish=Sink(), clock=_clock())
    assert monitor.monitored == ["rings"]


def test_alarm_rules_only_for_charts_that_ask() -> None:
    (rule,) = spc_alarm_rules([_chart(), _chart(name="quiet", alarm=False)])
    assert (rule.name, rule.tag, rule.kind, rule.limit, rule.priority) == (
        "spc.rings",
        f"{TAG}.spc.rings",
        "H",
        0.5,
        "high",
    )
    assert rule.text(2.0) == f"SPC rings: 2 rule(s) broken on {TAG}"


async def test_only_charts_owned_now_are_judged_and_one_taken_over_starts_afresh(
    historian: DuckDBHistorian,
) -> None:
    """Scaled out (analytics.partitions): another server judges the chart meanwhile."""
    await _store(historian, T0_NS + np.arange(BASELINE.size) * S, BASELINE)
    owned: set[str] = set()
    sink = Sink()
    monitor = SpcMonitor(
        [_chart()], historian, publish=sink, clock=_clock(), owns=owned.__contains__
    )
    await monitor.start()
    ts = T0_NS + (BASELINE.size + np.arange(40)) * S
    values = np.resize(BASELINE, 40)
    await monitor.process(LiveBatch(_batch(ts[:10], values[:10])))  # another server's
    assert sink.batches == []
    owned.add(TAG.rpartition("/")[0])  # its partition moved here
    await monitor.process(LiveBatch(_batch(ts[10:17], values[10:17])))
    assert [p[1] for p in sink.points()] == [int(ts[14])]  # a subgroup, and 2 points over
    owned.clear()
    await monitor.process(LiveBatch(_batch(ts[17:20], values[17:20])))
    owned.add(TAG.rpartition("/")[0])  # back again: the 2 points over are stale now
    await monitor.process(LiveBatch(_batch(ts[20:24], values[20:24])))
    assert len(sink.points()) == 1
    await monitor.process(LiveBatch(_batch(ts[24:25], values[24:25])))
    assert [p[1] for p in sink.points()] == [int(ts[14]), int(ts[24])]
