"""Retention, the disk budget and the storage report: the same assertions on every backend.

Mixed into :class:`~shopfloor.testing.historian_contract.HistorianContract`, so it runs
over each backend's ``store`` fixture. Every expectation is computed by numpy from the
points written (which days each tag keeps), never from the code under test; the budget
is set from a measurement of the same historian before eviction.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from shopfloor.model import PointBatch
from shopfloor.server.historian.base import Historian
from shopfloor.server.historian.disk_usage import Group, StorageReport, group_usage
from shopfloor.server.historian.retention_loop import RetentionReport
from shopfloor.server.historian.retention_policy import PathRule, RetentionPolicy

__all__ = ["RetentionContract"]

SECOND = 10**9
HOUR = 3600 * SECOND
DAY = 86_400 * SECOND
DAY0 = 1_700_000_000 * SECOND // DAY * DAY
"""A UTC midnight (2023-11-14)."""

UTILITIES = (
    "acme/plant-1/utilities/air/comp-1/pressure",
    "acme/plant-1/utilities/air/comp-1/power",
)
MACHINING = (
    "acme/plant-1/machining/line-1/cell-1/press/temp",
    "acme/plant-1/machining/line-1/cell-1/press/state",  # a text tag
)
QUALITY = ("acme/plant-1/quality/lab/bench/gauge/diameter",)
RPATHS = (*UTILITIES, *MACHINING, *QUALITY)
TEXT_TAG = MACHINING[1]


class _Store(Protocol):
    def open(self, **options: Any) -> Any: ...


class RetainingHistorian(Historian, Protocol):
    """A historian with retention and the storage report."""

    async def apply_retention(self) -> RetentionReport:
        """Apply retention and the budget now."""

    async def storage_report(self) -> StorageReport:
        """Measure the history."""

    async def compact(self) -> Any:
        """Compact closed ranges now."""


@dataclass
class _Points:
    path: npt.NDArray[np.object_]
    ts: npt.NDArray[np.int64]
    value: npt.NDArray[np.float64]

    def batch(self, part: npt.NDArray[np.intp]) -> PointBatch:
        paths = sorted(set(self.path[part]))
        index = {p: i for i, p in enumerate(paths)}
        text = [
            f"s{int(v) % 3}" if p == TEXT_TAG else None
            for p, v in zip(self.path[part], self.value[part], strict=True)
        ]
        return PointBatch.from_columns(
            paths,
            [index[p] for p in self.path[part]],
            self.ts[part],
            self.value[part],
            text=text if any(t is not None for t in text) else None,
        )


def _points(days: int, per_day: int, *, seed: int, paths: tuple[str, ...] = RPATHS) -> _Points:
    """``per_day`` irregular points per tag and day, a point on every midnight too."""
    rng = np.random.default_rng(seed)
    cols: dict[str, list[Any]] = {"path": [], "ts": [], "value": []}
    for path in paths:
        for day in range(days):
            start = DAY0 + day * DAY
            ts = np.unique(rng.integers(start, start + DAY, per_day))
            ts[0] = start  # the first nanosecond of the day belongs to it
            cols["path"].append(np.full(len(ts), path, dtype=object))
            cols["ts"].append(ts)
            cols["value"].append(np.round(rng.normal(50, 10, len(ts)), 3))
    return _Points(*(np.concatenate(cols[k]) for k in ("path", "ts", "value")))


async def _write(h: Historian, points: _Points, *, batches: int = 12) -> None:
    order = np.argsort(points.ts, kind="stable")  # as a plant sends: time goes forward
    for part in np.array_split(order, batches):
        await h.write(points.batch(part))
    await h.flush()


def _ts(table: pa.Table) -> npt.NDArray[np.int64]:
    return np.asarray(table.column("ts").cast(pa.int64()).to_numpy(), dtype=np.int64)


async def _assert_holds(h: Historian, points: _Points, keep: npt.NDArray[np.bool_]) -> None:
    """Each tag holds exactly the points ``keep`` selects, values and text included."""
    for path in RPATHS:
        m = (points.path == path) & keep
        table = await h.read_raw(path, DAY0 - DAY, DAY0 + 100 * DAY, limit=10**7)
        order = np.argsort(points.ts[m], kind="stable")
        np.testing.assert_array_equal(_ts(table), points.ts[m][order], err_msg=path)
        np.testing.assert_array_equal(
            table.column("value").to_numpy(), points.value[m][order], err_msg=path
        )
        if path == TEXT_TAG:
            want = [f"s{int(v) % 3}" for v in points.value[m][order]]
            assert table.column("text").to_pylist() == want


def _first_kept_midnight(now: int, keep: int) -> int:
    """The reference: the midnight at or before ``now - keep`` (integer floor division)."""
    return (now - keep) // DAY * DAY


async def _open(store: _Store, **options: Any) -> RetainingHistorian:
    h: RetainingHistorian = store.open(flush_interval_s=60, compaction_interval_s=None, **options)
    await h.start()
    return h


class RetentionContract:
    """Retention and disk budget behaviour; the subclass provides ``store``."""

    async def test_retention_deletes_exactly_the_expired_days_of_each_tag_class(
        self, store: _Store
    ) -> None:
        points = _points(8, 700, seed=11)
        now = [DAY0 + 8 * DAY + 5 * HOUR]
        policy = RetentionPolicy(
            raw_ns=4 * DAY,
            rules=(
                PathRule.of("acme/plant-1/utilities/**", 2 * DAY),
                PathRule.of("acme/plant-1/quality", None),  # kept forever
            ),
        )
        keep_of = {p: 2 * DAY for p in UTILITIES} | {p: 4 * DAY for p in MACHINING}
        cutoff = {p: _first_kept_midnight(now[0], k) for p, k in keep_of.items()}
        keep = np.array(
            [t >= cutoff.get(p, -(2**63)) for p, t in zip(points.path, points.ts, strict=True)]
        )
        h = await _open(store, clock=lambda: now[0], retention=policy)
        try:
            await _write(h, points)
            await h.compact()  # every day is closed: retention meets compacted days
            report = await h.apply_retention()
            assert report.raw_points == int((~keep).sum())
            assert h.stats().retention_deleted_points == int((~keep).sum())
            await _assert_holds(h, points, keep)
            again = await h.apply_retention()
            assert (again.raw_points, again.raw_units) == (0, 0)
            now[0] += DAY  # a day later one more day of each retained class goes
            later = await h.apply_retention()
            moved = {p: _first_kept_midnight(now[0], k) for p, k in keep_of.items()}
            keep_later = np.array(
                [t >= moved.get(p, -(2**63)) for p, t in zip(points.path, points.ts, strict=True)]
            )
            assert later.raw_points == int((keep & ~keep_later).sum())
            await _assert_holds(h, points, keep_later)
        finally:
            await h.close()
        h = await _open(store, clock=lambda: now[0])  # deleted for good, the rest kept
        try:
            await _assert_holds(h, points, keep_later)
        finally:
            await h.close()

    async def test_retention_keeps_a_day_until_all_of_it_is_older(self, store: _Store) -> None:
        points = _points(4, 400, seed=5)
        # two hours into day 3 with a day kept: day 2's first two hours are older than a
        # day, yet the day stays whole; days 0 and 1 go
        now = DAY0 + 3 * DAY + 2 * HOUR
        h = await _open(store, clock=lambda: now, retention=RetentionPolicy(raw_ns=DAY))
        try:
            await _write(h, points)
            await h.compact()  # rolled up: raw points may go
            report = await h.apply_retention()
            keep = points.ts >= _first_kept_midnight(now, DAY)
            assert report.raw_points == int((~keep).sum())
            assert (points.ts[keep] < now - DAY).any()  # the spared part of day 2
            await _assert_holds(h, points, keep)
        finally:
            await h.close()

    async def test_disk_budget_evicts_the_oldest_whole_days_first(self, store: _Store) -> None:
        points = _points(6, 40_000, seed=3, paths=RPATHS[:3])
        now = DAY0 + 5 * DAY + 23 * HOUR  # day 5 is today
        h = await _open(store, clock=lambda: now)
        try:
            await _write(h, points, batches=30)
            await h.compact()
            measured = await h.storage_report()
        finally:
            await h.close()
        # room for about half of the raw points: rollups and small tables stay as they are
        raw = sum(t.used_bytes for t in measured.tables if t.kind == "raw")
        budget = measured.totals.used_bytes - raw * 45 // 100
        h = await _open(
            store, clock=lambda: now, retention=RetentionPolicy(disk_budget_bytes=budget)
        )
        try:
            report = await h.apply_retention()
            assert 1 <= report.evicted_raw_days <= 4
            assert not report.over_budget
            assert report.used_bytes is not None
            assert report.used_bytes <= budget
            assert (await h.storage_report()).totals.used_bytes <= budget
            first_kept = DAY0 + report.evicted_raw_days * DAY  # oldest days, whole
            kept = points.ts >= first_kept
            await _assert_holds_some(h, points, kept)
            assert report.evicted_raw_points == int((~kept).sum())
            stats = h.stats()
            assert stats.budget_evictions == report.evicted_raw_days
            assert stats.storage_used_bytes == report.used_bytes
        finally:
            await h.close()

    async def test_disk_budget_never_evicts_the_current_day(self, store: _Store) -> None:
        points = _points(3, 300, seed=8)
        now = DAY0 + 2 * DAY + 12 * HOUR
        policy = RetentionPolicy(disk_budget_bytes=1)
        h = await _open(store, clock=lambda: now, retention=policy)
        try:
            await _write(h, points)
            report = await h.apply_retention()
            assert report.over_budget
            assert report.evicted_raw_days == 2
            await _assert_holds(h, points, points.ts >= DAY0 + 2 * DAY)
        finally:
            await h.close()

    async def test_storage_report_counts_every_tag_against_numpy(self, store: _Store) -> None:
        points = _points(2, 900, seed=21)
        h = await _open(store, clock=lambda: DAY0 + 3 * DAY)
        try:
            await _write(h, points)
            await h.compact()
            report = await h.storage_report()
        finally:
            await h.close()
        by_path = {t.path: t for t in report.tags}
        assert sorted(by_path) == sorted(RPATHS)
        for path in RPATHS:
            own = points.ts[points.path == path]
            usage = by_path[path]
            assert (usage.points, usage.oldest_ns, usage.newest_ns) == (
                len(own),
                int(own.min()),
                int(own.max()),
            )
            assert usage.bytes > 0
        assert report.totals.points == len(points.ts)
        raw_tables = [t for t in report.tables if t.kind == "raw"]
        assert sum(t.points for t in raw_tables) == len(points.ts)
        # what raw tables with rows hold is the tags' (an empty one's indexes are no one's)
        held = sum(t.used_bytes for t in raw_tables if t.rows)
        assert sum(t.bytes for t in report.tags) == held
        assert all(t.used_bytes <= t.bytes for t in report.tables)
        assert report.totals.used_bytes > 0
        assert report.totals.storage_bytes >= sum(t.bytes for t in raw_tables)
        _assert_groups(report, points)


async def _assert_holds_some(h: Historian, points: _Points, keep: npt.NDArray[np.bool_]) -> None:
    """Like :func:`_assert_holds` over the tags ``points`` has."""
    for path in sorted(set(points.path)):
        m = (points.path == path) & keep
        table = await h.read_raw(path, DAY0 - DAY, DAY0 + 100 * DAY, limit=10**7)
        np.testing.assert_array_equal(_ts(table), np.sort(points.ts[m]), err_msg=path)


def _assert_groups(report: StorageReport, points: _Points) -> None:
    """Per equipment and area, the sums of the tags the path says belong there."""
    groups: tuple[tuple[Group, int | None], ...] = (("equipment", None), ("area", 3))
    for group, depth in groups:
        got = {g.key: g.points for g in group_usage(report.tags, group)}
        want: dict[str, int] = {}
        for path in RPATHS:
            key = "/".join(path.split("/")[:-1][:depth])
            want[key] = want.get(key, 0) + int((points.path == path).sum())
        assert got == want
    prefixed = group_usage(report.tags, "tag", prefix="acme/plant-1/utilities")
    assert sorted(g.key for g in prefixed) == sorted(UTILITIES)
