"""The analytics store contract over both backends: the SQLite file of a single server
and the tables in a shared PostgreSQL historian's schema.

Stored hours, forgetting them, settings changes, reasons; and what a shared store must
also do: two stores open on the same data (two servers) see each other's hours and
reasons, and two storing the same machine's hours at once leave one computation's
slices, never a mix.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import psycopg
import pytest

from shopfloor.config.analytics import DowntimeSection, ShiftsSection
from shopfloor.server.analytics.downtime import Steps
from shopfloor.server.analytics.energy import EnergySeries, compute_energy, power_pieces
from shopfloor.server.analytics.energy import read_window as energy_read_window
from shopfloor.server.analytics.oee import MachineSeries, Slices, compute_slices, read_window
from shopfloor.server.analytics.pg_store import PgAnalyticsStore
from shopfloor.server.analytics.shifts import ShiftCalendar
from shopfloor.server.analytics.store import AnalyticsStore
from shopfloor.server.analytics.store_base import AnalyticsStorage, AnalyticsStoreError
from shopfloor.testing.postgres import PostgresServer

S = 10**9
M = 60 * S
H = 3600 * S
PATH = "acme/p1/area/line-1/cell/m1"
OTHER = "acme/p1/area/line-1/cell/m2"
T0 = round(datetime(2026, 3, 2, 6, tzinfo=UTC).timestamp()) * S

OpenStore = Callable[[], AnalyticsStorage]


def machine(state: Sequence[tuple[int, float]], read: tuple[int, int]) -> MachineSeries:
    """A machine with only a state tag (points before ``read[0]`` give the first state)."""
    lo, hi = read
    before = [v for t, v in state if t < lo]
    inside = [(t, v) for t, v in state if lo <= t < hi]
    steps = Steps.of(
        lo,
        before[-1] if before else None,
        np.array([t for t, _ in inside], dtype=np.int64),
        np.array([v for _, v in inside], dtype=np.float64),
    )
    return MachineSeries(PATH, "m1", 60.0, steps, None, None, None, None, read_end=hi)


SPLIT = ShiftCalendar(
    ShiftsSection.model_validate(
        {
            "shifts": [
                {"name": "early", "start": "06:30", "end": "18:30"},
                {"name": "late", "start": "18:30", "end": "06:30"},
            ]
        }
    )
)
"""A calendar planning the whole day, with shift changes inside hours."""


def oee_slices(
    state: Sequence[tuple[int, float]], start: int, end: int, *, cal: ShiftCalendar | None = None
) -> Slices:
    cal, settings = cal or ShiftCalendar(ShiftsSection()), DowntimeSection()
    series = machine(state, read_window(cal, settings, start, end))
    return compute_slices(series, cal, settings, start, end)


def put(
    store: AnalyticsStorage,
    path: str,
    sl: Slices,
    *,
    cal: ShiftCalendar | None = None,
    epoch: int | None = None,
) -> bool:
    cal = cal or ShiftCalendar(ShiftsSection())
    days = [cal.day_of(int(t)) for t in sl.start]
    return store.put_hours(path, sl, shift_names=cal.names, days=days, computed_ns=1, epoch=epoch)


class AnalyticsStoreContract:
    """The assertions; each backend's subclass provides ``open_store`` (every call opens
    the same stored data again, as a restarted or another server would)."""

    def test_hours_are_kept_forgotten_and_cleared_when_settings_change(
        self, open_store: OpenStore
    ) -> None:
        slices = oee_slices([(T0 - H, 1)], T0, T0 + 3 * H)
        store = open_store()
        try:
            assert store.settings_changed("one") is False  # a new store: nothing to clear
            put(store, PATH, slices)
            store.assign_reason(PATH, T0, 7, user="ana", comment="", now_ns=2)
            assert store.stored_hours([PATH], T0, T0 + 3 * H)[PATH] == {T0, T0 + H, T0 + 2 * H}
            (row,) = store.sum_hours([PATH], T0, T0 + 3 * H, "none")
            assert row.sums["planned_ns"] == 3 * H
            assert row.sums["run_ns"] == 3 * H
            store.invalidate(PATH, T0 + H + 1, T0 + H + 2)  # inside the second hour
            assert store.count_hours([PATH], T0, T0 + 3 * H) == {PATH: 2}
            assert store.settings_changed("one") is False
            assert store.count_hours([PATH], T0, T0 + 3 * H) == {PATH: 2}
        finally:
            store.close()
        store = open_store()  # reopened: kept
        try:
            assert store.count_hours([PATH], T0, T0 + 3 * H) == {PATH: 2}
            assert store.settings_changed("two") is True  # another calendar: all computed again
            assert store.count_hours([PATH], T0, T0 + 3 * H) == {PATH: 0}
            assert store.reasons(PATH, T0, T0 + 1) == {T0: 7}  # an operator's word stays
        finally:
            store.close()

    def test_energy_hours_are_stored_beside_oee_and_cleared_apart(
        self, open_store: OpenStore
    ) -> None:
        cal = ShiftCalendar(ShiftsSection())
        lo, hi = energy_read_window(T0, T0 + 3 * H, 10 * M)
        ts = np.arange(lo, hi, M, dtype=np.int64)
        pieces = power_pieces(ts, np.full(len(ts), 6.0), read_end=hi, max_gap_ns=10 * M)
        empty = np.empty(0, dtype=np.int64)
        series = EnergySeries(PATH, "m1", "power", pieces, None, 1, empty, np.empty(0), lo, hi)
        energy = compute_energy(series, cal, T0, T0 + 3 * H)
        oee = oee_slices([(T0 - H, 1)], T0, T0 + 3 * H)
        store = open_store()
        try:
            days = [cal.day_of(int(t)) for t in energy.start]
            put(store, PATH, oee)
            store.put_hours(
                PATH, energy, shift_names=cal.names, days=days, computed_ns=1, kind="energy"
            )
            (row,) = store.sum_hours([PATH], T0, T0 + 3 * H, "none", kind="energy")
            assert row.sums["kwh"] == pytest.approx(18.0)  # 6 kW x 3 h
            assert row.sums["unknown_kwh"] == pytest.approx(18.0)  # no state tag
            by_hour = store.sum_hours([PATH], T0, T0 + 3 * H, "hour", kind="energy")
            assert [r.sums["kwh"] for r in by_hour] == pytest.approx([6.0, 6.0, 6.0])
            store.invalidate(PATH, T0 + H, T0 + H + 1)  # a late point: both kinds forget it
            assert store.count_hours([PATH], T0, T0 + 3 * H, kind="energy") == {PATH: 2}
            assert store.count_hours([PATH], T0, T0 + 3 * H) == {PATH: 2}
            assert store.settings_changed("e1", kind="energy") is False
            assert store.settings_changed("e2", kind="energy") is True  # energy settings only
            assert store.count_hours([PATH], T0, T0 + 3 * H, kind="energy") == {PATH: 0}
            assert store.count_hours([PATH], T0, T0 + 3 * H) == {PATH: 2}
        finally:
            store.close()

    def test_groups_sum_columns_across_machines(self, open_store: OpenStore) -> None:
        running = oee_slices([(T0 - H, 1)], T0, T0 + 3 * H)
        stopped = oee_slices([(T0 - H, 1), (T0 + 10 * M, 4), (T0 + 40 * M, 1)], T0, T0 + 3 * H)
        store = open_store()
        try:
            assert all(store.sum_hours([PATH], T0, T0 + 3 * H, g) == [] for g in ("hour", "none"))
            put(store, PATH, running)
            put(store, OTHER, stopped)
            both = [PATH, OTHER]
            (total,) = store.sum_hours(both, T0, T0 + 3 * H, "none")
            assert (total.key, total.start_ns, total.end_ns) == (("",), T0, T0 + 3 * H)
            assert total.sums["planned_ns"] == 6 * H
            assert total.sums["run_ns"] == 6 * H - 30 * M
            hours = store.sum_hours(both, T0, T0 + 3 * H, "hour")
            assert [r.key for r in hours] == [(T0,), (T0 + H,), (T0 + 2 * H,)]
            assert [r.sums["run_ns"] for r in hours] == [2 * H - 30 * M, 2 * H, 2 * H]
            (day,) = store.sum_hours(both, T0, T0 + 3 * H, "day")
            assert day.key == ("2026-03-02",)
            shifts = store.sum_hours(both, T0, T0 + 3 * H, "shift")
            assert sum(r.sums["planned_ns"] for r in shifts) == 6 * H
            assert all(isinstance(r.key[0], str) and isinstance(r.key[1], int) for r in shifts)
            assert store.count_hours([PATH, OTHER, "nope"], T0, T0 + 3 * H) == {
                PATH: 3,
                OTHER: 3,
                "nope": 0,
            }
        finally:
            store.close()

    def test_two_stores_see_each_others_hours_and_reasons(self, open_store: OpenStore) -> None:
        one, two = open_store(), open_store()
        try:
            put(one, PATH, oee_slices([(T0 - H, 1)], T0, T0 + 3 * H))
            assert two.count_hours([PATH], T0, T0 + 3 * H) == {PATH: 3}  # not computed again
            first = one.assign_reason(PATH, T0 + 10 * M, 4, user="ana", comment="", now_ns=5)
            assert first.previous is None
            again = two.assign_reason(PATH, T0 + 10 * M, 7, user="bo", comment="tool", now_ns=6)
            assert again.previous == 4  # what the other server's operator had said
            assert one.reasons(PATH, T0, T0 + H) == {T0 + 10 * M: 7}
            (seen,) = one.assignments(PATH, T0, T0 + H).values()
            assert seen == again
            two.invalidate(PATH, T0 + 10 * M, T0 + 40 * M)
            assert one.stored_hours([PATH], T0, T0 + 3 * H)[PATH] == {T0 + H, T0 + 2 * H}
        finally:
            one.close()
            two.close()

    def test_hours_computed_before_a_forgetting_are_not_stored(self, open_store: OpenStore) -> None:
        one, two = open_store(), open_store()
        try:
            epoch, other = one.epoch(PATH), one.epoch(OTHER)  # server one starts computing
            stale = oee_slices([(T0 - H, 1)], T0, T0 + 3 * H)
            # meanwhile an operator on server two gives a stop in those hours a reason
            two.assign_reason(PATH, T0 + 10 * M, 7, user="ana", comment="", now_ns=5)
            two.invalidate(PATH, T0 + 10 * M, T0 + 40 * M)
            assert one.epoch(PATH) != epoch
            assert put(one, PATH, stale, epoch=epoch) is False  # would hide the reason
            assert two.count_hours([PATH], T0, T0 + 3 * H) == {PATH: 0}
            assert put(one, PATH, stale, epoch=one.epoch(PATH)) is True  # computed again
            assert two.count_hours([PATH], T0, T0 + 3 * H) == {PATH: 3}
            assert put(one, OTHER, stale, epoch=other) is True  # another machine's hours
            assert put(two, PATH, stale) is True  # without an epoch: stored as before
        finally:
            one.close()
            two.close()

    def test_storing_the_same_hours_at_once_leaves_one_computation(
        self, open_store: OpenStore
    ) -> None:
        # two servers computed the same hours with other shift changes (a calendar edit
        # rolled out to one first): slice boundaries differ, and a mix would count twice
        whole = oee_slices([(T0 - H, 1)], T0, T0 + 3 * H)
        split = oee_slices([(T0 - H, 1)], T0, T0 + 3 * H, cal=SPLIT)
        assert len(split) == len(whole) + 1  # 06:00-06:30, 06:30-07:00
        one, two, reader = open_store(), open_store(), open_store()
        try:
            with ThreadPoolExecutor(2) as pool:
                jobs = [
                    pool.submit(
                        lambda s=s, sl=sl, c=c: [put(s, PATH, sl, cal=c) for _ in range(40)]
                    )
                    for s, sl, c in ((one, whole, None), (two, split, SPLIT))
                ]
                seen: set[tuple[float, float]] = set()
                while not all(job.done() for job in jobs):  # what a third server reads meanwhile
                    for r in reader.sum_hours([PATH], T0, T0 + 3 * H, "none"):
                        seen.add((r.sums["planned_ns"], r.sums["run_ns"]))
                for job in jobs:
                    job.result()
            assert seen <= {(3 * H, 3 * H)}  # never a mix of both computations
            (row,) = one.sum_hours([PATH], T0, T0 + 3 * H, "none")
            assert (row.sums["planned_ns"], row.sums["run_ns"]) == (3 * H, 3 * H)
            assert len(one.sum_hours([PATH], T0, T0 + 3 * H, "shift")) in (1, 2)
            assert one.count_hours([PATH], T0, T0 + 3 * H) == {PATH: 3}
            put(two, PATH, whole)  # once more from both: the same figures, stored once
            put(one, PATH, whole)
            (row,) = two.sum_hours([PATH], T0, T0 + 3 * H, "none")
            assert (row.sums["planned_ns"], row.sums["run_ns"]) == (3 * H, 3 * H)
            assert [r.key[0] for r in two.sum_hours([PATH], T0, T0 + 3 * H, "shift")] == ["early"]
        finally:
            for store in (one, two, reader):
                store.close()


class TestSqlite(AnalyticsStoreContract):
    @pytest.fixture
    def open_store(self, tmp_path: Path) -> OpenStore:
        return lambda: AnalyticsStore(tmp_path / "nested" / "analytics.sqlite")


class TestPostgres(AnalyticsStoreContract):
    @pytest.fixture
    def dsn(self, postgres_server: PostgresServer) -> Iterator[str]:
        dsn = postgres_server.create_database()
        with psycopg.connect(dsn, autocommit=True) as con:
            con.execute("CREATE SCHEMA shopfloor")  # the historian's, made by the historian
        yield dsn
        postgres_server.drop_database(dsn.rsplit("dbname=", 1)[1])

    @pytest.fixture
    def open_store(self, dsn: str) -> OpenStore:
        return lambda: PgAnalyticsStore(dsn, "shopfloor")

    def test_a_lost_connection_fails_one_call_then_is_made_again(self, dsn: str) -> None:
        store = PgAnalyticsStore(dsn, "shopfloor")
        try:
            store.assign_reason(PATH, T0, 7, user="ana", comment="", now_ns=1)
            with psycopg.connect(dsn, autocommit=True) as con:  # as a database restart would
                con.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE application_name = 'shopfloor-analytics'"
                    " AND datname = current_database()"
                )
            with pytest.raises(AnalyticsStoreError, match="shared analytics store"):
                store.reasons(PATH, T0, T0 + 1)
            assert store.reasons(PATH, T0, T0 + 1) == {T0: 7}
        finally:
            store.close()

    def test_a_missing_database_is_a_store_error(self, postgres_server: PostgresServer) -> None:
        with pytest.raises(AnalyticsStoreError, match="cannot connect"):
            PgAnalyticsStore(postgres_server.dsn("no_such_db"), "shopfloor")
