"""The historian contract: one suite of behaviour tests that every backend must pass.

What the :class:`~shopfloor.server.historian.base.Historian` protocol promises (raw
ranges and limits, every aggregate checked against an independent numpy computation,
latest values across a restart, unknown tags, metadata, exactly-once acknowledged writes,
failed commits, close) is asserted here once, without naming a backend. A backend's test
module subclasses :class:`HistorianContract` and provides a ``store`` fixture: a
:class:`HistorianStore` that opens historians over one storage location, so a test can
close a historian and open the same data again::

    class TestMyBackend(HistorianContract):
        @pytest.fixture
        def store(self, tmp_path: Path) -> HistorianStore:
            return MyStore(tmp_path)

``tests/contract/test_historians.py`` runs it over :class:`DuckDBStore` and
:class:`PostgresStore`. This module needs pytest (and pytest-asyncio in auto mode).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import duckdb
import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pytest

from shopfloor.errors import HistorianError, PayloadError, ShutdownError, UnknownTagError
from shopfloor.model import DataType, PointBatch, Quality, TagMeta
from shopfloor.server.historian.base import Aggregate, Historian
from shopfloor.server.historian.compaction import CompactionReport
from shopfloor.testing.historian_query_contract import QueryContract
from shopfloor.testing.historian_retention_contract import RetentionContract
from shopfloor.testing.historian_rollup_contract import RollupContract

__all__ = [
    "ContractHistorian",
    "Data",
    "DuckDBStore",
    "HistorianContract",
    "HistorianStore",
    "PostgresStore",
    "make_data",
    "numpy_aggregates",
]

T0 = 1_700_000_000 * 10**9
SECOND = 10**9
DAY = 86400 * SECOND
END = T0 + 10 * DAY
PATHS = (
    "plant/line1/press/temp",
    "plant/line1/press/force",
    "plant/line2/oven/zone1",
    "plant/line2/oven/state",  # a text tag
)
TEXT_PATH = PATHS[3]
NUMPY_CHECKED = [a for a in Aggregate if a not in (Aggregate.TWA, Aggregate.DELTA)]
"""Aggregates :func:`numpy_aggregates` computes (twa and delta: see QueryContract)."""


class ContractHistorian(Historian, Protocol):
    """A historian as the contract drives it: the protocol plus ledger pruning and a counter."""

    @property
    def backpressure_waits(self) -> int:
        """How often a writer waited for room in the write queue."""
        ...

    async def prune_ledger(self) -> int:
        """Delete ingest-ledger rows past retention now; return how many."""

    async def compact(self) -> CompactionReport:
        """Compact every closed time range now (see each backend's compaction module)."""


class HistorianStore(Protocol):
    """One storage location (a file, a database) that historians of a backend open."""

    def open(self, **options: Any) -> ContractHistorian:
        """A new, not yet started historian over this storage.

        Options every backend takes: ``flush_interval_s``, ``flush_rows``,
        ``max_pending_rows``, ``ack_delay_s``, ``ledger_retention_s``, ``clock``.
        """

    async def ledger_rows(self) -> list[tuple[str, int, int]]:
        """``(edge, seq, points)`` of the durable ingest ledger, sorted; called after close."""

    async def low_water_rows(self) -> list[tuple[str, int]]:
        """``(edge, low_water)`` of the durable marks, sorted; called after close."""

    def failing_commits(self) -> contextlib.AbstractAsyncContextManager[None]:
        """While entered, a commit that stores points of a tag that already has points fails.

        It must fail for a real reason inside the database (a conflict, a constraint),
        not a patched method.
        """

    def failing_compactions(self) -> contextlib.AbstractAsyncContextManager[None]:
        """While entered, every compaction step fails inside the database (rolled back)."""


# ------------------------------------------------------------------------- test data
@dataclass
class Data:
    """All points of a test as flat numpy columns, the reference for every check."""

    path: npt.NDArray[np.object_]
    ts: npt.NDArray[np.int64]
    value: npt.NDArray[np.float64]
    quality: npt.NDArray[np.uint32]
    text: npt.NDArray[np.object_]

    def __len__(self) -> int:
        return len(self.ts)

    def batches(self, rng: np.random.Generator, count: int) -> list[PointBatch]:
        """Split the points, shuffled, into ``count`` batches with their own tag tuples."""
        out = []
        for part in np.array_split(rng.permutation(len(self)), count):
            paths = list(dict.fromkeys(self.path[part]))
            rng.shuffle(paths)
            index = {p: i for i, p in enumerate(paths)}
            texts = self.text[part]
            out.append(
                PointBatch.from_columns(
                    paths,
                    [index[p] for p in self.path[part]],
                    self.ts[part],
                    self.value[part],
                    self.quality[part],
                    text=list(texts) if any(t is not None for t in texts) else None,
                )
            )
        return out

    def last(self, path: str) -> int:
        """Index of the newest point of ``path``."""
        idx = np.flatnonzero(self.path == path)
        return int(idx[np.argmax(self.ts[idx])])


def make_data(seed: int, per_tag: int = 400, *, t0: int = T0) -> Data:
    """Irregular, unique-per-tag timestamps from ``t0``; some Bad/Uncertain points, NaNs, texts."""
    rng = np.random.default_rng(seed)
    cols: dict[str, list[npt.NDArray[Any]]] = {k: [] for k in Data.__annotations__}
    qualities = np.array(
        [Quality.GOOD, Quality.UNCERTAIN, Quality.BAD_SENSOR_FAILURE, Quality.BAD], np.uint32
    )
    for path in PATHS:
        ts = t0 + np.cumsum(rng.integers(1, 3 * SECOND, per_tag))
        value = rng.normal(50.0, 10.0, per_tag)
        value[rng.random(per_tag) < 0.05] = np.nan
        text = np.full(per_tag, None, dtype=object)
        if path == TEXT_PATH:
            value[:] = np.nan
            text = rng.choice(np.array(["RUNNING", "IDLE", "FAULT"], dtype=object), per_tag)
        cols["path"].append(np.full(per_tag, path, dtype=object))
        cols["ts"].append(ts)
        cols["value"].append(value)
        cols["quality"].append(rng.choice(qualities, per_tag, p=[0.8, 0.05, 0.1, 0.05]))
        cols["text"].append(text)
    joined = {k: np.concatenate(v) for k, v in cols.items()}
    return Data(**joined)


def numpy_aggregates(
    data: Data, path: str, start: int, end: int, bucket: int
) -> dict[str, npt.NDArray[Any]]:
    """Every aggregate of one tag computed by numpy alone: the independent reference."""
    m = (
        (data.path == path)
        & (data.ts >= start)
        & (data.ts < end)
        & ((data.quality & np.uint32(0xC0000000)) == 0)
        & ~np.isnan(data.value)
    )
    ts, value = data.ts[m], data.value[m]
    buckets = (ts // bucket) * bucket  # floor division: right before 1970 too
    out: dict[str, list[float]] = {k: [] for k in ["ts", *(a.value for a in NUMPY_CHECKED)]}
    for b in np.unique(buckets):
        t, v = ts[buckets == b], value[buckets == b]
        out["ts"].append(b)
        out["avg"].append(v.mean())
        out["min"].append(v.min())
        out["max"].append(v.max())
        out["first"].append(v[np.argmin(t)])
        out["last"].append(v[np.argmax(t)])
        out["count"].append(len(v))
        out["sum"].append(v.sum())
        out["stddev"].append(v.std(ddof=1) if len(v) > 1 else np.nan)
    return {k: np.asarray(v) for k, v in out.items()}


def ts_ns(table: pa.Table, column: str = "ts") -> npt.NDArray[np.int64]:
    """A timestamp column as int64 nanoseconds."""
    return np.asarray(table.column(column).cast(pa.int64()).to_numpy(), dtype=np.int64)


def seq_batch(seq: int, n: int = 50, tag: str = "plant/line/temp") -> PointBatch:
    """A batch whose points are unique to ``seq`` (the value is the seq), to count copies."""
    ts = T0 + seq * 1000 * SECOND + np.arange(n) * SECOND
    return PointBatch.from_columns([tag], np.zeros(n), ts, np.full(n, float(seq)))


async def stored_per_seq(h: Historian, tag: str = "plant/line/temp") -> dict[int, int]:
    """How many points of each seq the historian holds."""
    try:
        table = await h.read_raw(tag, 0, END)
    except UnknownTagError:
        return {}
    values, counts = np.unique(table.column("value").to_numpy(), return_counts=True)
    return {int(v): int(c) for v, c in zip(values, counts, strict=True)}


async def write_all(h: Historian, data: Data, *, batches: int = 9, seed: int = 1) -> None:
    """Write shuffled batches, one commit each, so storage order is not time order."""
    for batch in data.batches(np.random.default_rng(seed), batches):
        await h.write(batch)
        await h.flush()


def joined(*parts: Data) -> Data:
    """The points of several data sets as one."""
    return Data(**{k: np.concatenate([getattr(d, k) for d in parts]) for k in Data.__annotations__})


async def assert_stored(h: Historian, data: Data) -> None:
    """Every tag holds exactly the points of ``data``, oldest first (one numpy reference)."""
    for path in PATHS:
        table = await h.read_raw(path, 0, END, limit=10**6)
        m = data.path == path
        order = np.argsort(data.ts[m], kind="stable")
        np.testing.assert_array_equal(ts_ns(table), data.ts[m][order])
        np.testing.assert_array_equal(table.column("value").to_numpy(), data.value[m][order])
        np.testing.assert_array_equal(table.column("quality").to_numpy(), data.quality[m][order])
        assert table.column("text").to_pylist() == list(data.text[m][order])


def assert_latest_matches(table: pa.Table, data: Data, paths: list[str]) -> None:
    """``latest`` holds the newest point of each of ``paths``, in that order."""
    idx = [data.last(p) for p in paths]
    assert table.column("path").to_pylist() == paths
    np.testing.assert_array_equal(ts_ns(table), data.ts[idx])
    np.testing.assert_array_equal(table.column("value").to_numpy(), data.value[idx])
    np.testing.assert_array_equal(table.column("quality").to_numpy(), data.quality[idx])
    assert table.column("text").to_pylist() == list(data.text[idx])


@contextlib.asynccontextmanager
async def running(store: HistorianStore, **options: Any) -> AsyncIterator[ContractHistorian]:
    """A started historian over ``store``, closed at the end."""
    h = store.open(**options)
    await h.start()
    try:
        yield h
    finally:
        await h.close()


# --------------------------------------------------------------------------- the suite
class HistorianContract(QueryContract, RetentionContract, RollupContract):
    """Behaviour every historian backend must show. Subclasses provide ``store``.

    The query semantics (``read_buckets``, ``read_at``, twa, delta, time zones) are in
    :class:`~shopfloor.testing.historian_query_contract.QueryContract`.
    """

    @pytest.fixture
    def store(self) -> HistorianStore:
        """The storage under test; every subclass overrides this fixture."""
        raise NotImplementedError("a HistorianContract subclass must define the store fixture")

    @pytest.fixture
    async def historian(self, store: HistorianStore) -> AsyncIterator[ContractHistorian]:
        """A started historian that commits quickly (plain writes within 50 ms)."""
        async with running(store, flush_interval_s=0.05) as h:
            yield h

    @pytest.fixture
    def data(self) -> Data:
        """Four tags of irregular points, some Bad, some NaN, one text tag."""
        return make_data(seed=7)

    # --------------------------------------------------------------------- raw reads
    async def test_read_raw_matches_numpy_filter_and_sort(
        self, historian: ContractHistorian, data: Data
    ) -> None:
        await write_all(historian, data)
        rng = np.random.default_rng(3)
        for path in PATHS:
            own = np.sort(data.ts[data.path == path])
            # start and end on real timestamps, so [start, end) boundaries matter
            for start, end in [(own[0], own[-1] + 1), (own[10], own[200]), (own[50], own[50])]:
                table = await historian.read_raw(path, int(start), int(end))
                m = (data.path == path) & (data.ts >= start) & (data.ts < end)
                order = np.argsort(data.ts[m])
                assert table.column_names == ["ts", "value", "quality", "text"]
                assert table.schema.field("ts").type == pa.timestamp("ns", tz="UTC")
                assert table.schema.field("quality").type == pa.uint32()
                np.testing.assert_array_equal(ts_ns(table), data.ts[m][order])
                np.testing.assert_array_equal(
                    table.column("value").to_numpy(), data.value[m][order]
                )
                np.testing.assert_array_equal(
                    table.column("quality").to_numpy(), data.quality[m][order]
                )
                assert table.column("text").to_pylist() == list(data.text[m][order])
            limit = int(rng.integers(1, 30))
            start = int(own[5])
            table = await historian.read_raw(path, start, T0 * 2, limit=limit)
            np.testing.assert_array_equal(ts_ns(table), own[5 : 5 + limit])
            assert (await historian.read_raw(path, start, T0 * 2, limit=0)).num_rows == 0

    async def test_reads_see_only_committed_points(self, store: HistorianStore, data: Data) -> None:
        async with running(store, flush_interval_s=3600, flush_rows=10**9) as h:
            first, second = data.batches(np.random.default_rng(0), 2)
            await h.write(first)
            await h.flush()
            await h.write(second)  # accepted, not yet committed
            path = PATHS[0]
            seen = await h.read_raw(path, 0, T0 * 2, limit=10**6)
            assert len(seen) == int(np.sum(np.asarray(first.paths()) == path))
            assert h.stats().points_pending == len(second)
            await h.flush()
            seen = await h.read_raw(path, 0, T0 * 2, limit=10**6)
            assert len(seen) == int(np.sum(data.path == path))
            assert h.stats().points_written == len(data)
            assert h.stats().points_pending == 0

    # -------------------------------------------------------------------- aggregates
    @pytest.mark.parametrize("bucket", [SECOND, 7 * SECOND, 60 * SECOND, 10**6 * SECOND])
    async def test_aggregates_match_numpy_groupby(
        self, historian: ContractHistorian, data: Data, bucket: int
    ) -> None:
        await write_all(historian, data)
        for path in PATHS[:3]:
            own = np.sort(data.ts[data.path == path])
            start, end = int(own[13]), int(own[377])
            table = await historian.read_aggregates(
                path, start, end, bucket_ns=bucket, aggregates=NUMPY_CHECKED
            )
            expected = numpy_aggregates(data, path, start, end, bucket)
            assert table.column_names == ["ts", *(a.value for a in NUMPY_CHECKED)]
            assert table.schema.field("ts").type == pa.timestamp("ns", tz="UTC")
            assert table.schema.field("count").type == pa.int64()
            assert len(expected["ts"]) > 0
            np.testing.assert_array_equal(ts_ns(table), expected["ts"])
            for agg in NUMPY_CHECKED:
                got = table.column(agg.value).to_numpy(zero_copy_only=False)
                np.testing.assert_allclose(got, expected[agg.value], rtol=1e-12, err_msg=agg.value)

    async def test_buckets_before_1970_are_floored(self, historian: ContractHistorian) -> None:
        data = make_data(seed=5, per_tag=60, t0=-40 * SECOND)  # straddles the epoch
        await write_all(historian, data, batches=3)
        path = PATHS[0]
        table = await historian.read_aggregates(
            path, -DAY, DAY, bucket_ns=7 * SECOND, aggregates=[Aggregate.COUNT, Aggregate.FIRST]
        )
        expected = numpy_aggregates(data, path, -DAY, DAY, 7 * SECOND)
        assert int(expected["ts"][0]) < 0 < int(expected["ts"][-1])
        np.testing.assert_array_equal(ts_ns(table), expected["ts"])
        np.testing.assert_array_equal(table.column("count").to_numpy(), expected["count"])
        np.testing.assert_array_equal(table.column("first").to_numpy(), expected["first"])

    async def test_aggregates_subset_in_asked_order_and_text_tag_empty(
        self, historian: ContractHistorian, data: Data
    ) -> None:
        await write_all(historian, data)
        path = PATHS[1]
        table = await historian.read_aggregates(
            path,
            T0,
            T0 * 2,
            bucket_ns=30 * SECOND,
            aggregates=[Aggregate.COUNT, Aggregate.MAX, Aggregate.COUNT],
        )
        assert table.column_names == ["ts", "count", "max"]
        expected = numpy_aggregates(data, path, T0, T0 * 2, 30 * SECOND)
        np.testing.assert_array_equal(table.column("count").to_numpy(), expected["count"])
        np.testing.assert_array_equal(table.column("max").to_numpy(), expected["max"])
        # a text tag has no numeric Good points: no bucket at all
        text = await historian.read_aggregates(
            TEXT_PATH, T0, T0 * 2, bucket_ns=SECOND, aggregates=[Aggregate.AVG]
        )
        assert text.num_rows == 0
        assert text.column_names == ["ts", "avg"]

    async def test_bad_query_arguments_are_payload_errors(
        self, historian: ContractHistorian, data: Data
    ) -> None:
        await write_all(historian, data)
        with pytest.raises(PayloadError):
            await historian.read_aggregates(
                PATHS[0], T0, T0 * 2, bucket_ns=0, aggregates=[Aggregate.AVG]
            )
        with pytest.raises(PayloadError):
            await historian.read_raw(PATHS[0], T0, T0 * 2, limit=-1)

    # ------------------------------------------------------------------------ latest
    async def test_latest_is_last_by_ts_and_survives_restart(
        self, store: HistorianStore, data: Data
    ) -> None:
        async with running(store, flush_interval_s=0.05) as h:
            # one flush per batch, shuffled: later commits carry older points too
            for batch in data.batches(np.random.default_rng(5), 12):
                await h.write(batch)
                await h.flush()
            assert_latest_matches(await h.latest(), data, sorted(PATHS))
            some = [PATHS[2], PATHS[0]]
            assert_latest_matches(await h.latest(some), data, some)
        async with running(store) as h:
            assert_latest_matches(await h.latest(), data, sorted(PATHS))
            # the rebuilt values keep working: a newer point replaces, an older one does not
            newer = PointBatch.from_points(
                [(PATHS[0], T0 * 2, 1.5, Quality.GOOD), (PATHS[1], T0 - 1, 2.5, Quality.GOOD)]
            )
            await h.write(newer)
            await h.flush()
            table = await h.latest([PATHS[0], PATHS[1]])
            assert ts_ns(table).tolist() == [T0 * 2, int(data.ts[data.last(PATHS[1])])]
            assert table.column("value").to_pylist()[0] == 1.5

    async def test_latest_of_equal_timestamps_is_the_later_write(
        self, store: HistorianStore
    ) -> None:
        path = "a/tie"
        async with running(store, flush_interval_s=3600, flush_rows=10**9) as h:
            await h.write(PointBatch.from_points([(path, T0, 1.0, Quality.GOOD)]))
            await h.flush()
            await h.write(PointBatch.from_points([(path, T0, 2.0, Quality.GOOD)]))
            await h.flush()
            assert (await h.latest([path])).column("value").to_pylist() == [2.0]
            # two writes in one commit: the later still wins
            await h.write(PointBatch.from_points([(path, T0, 3.0, Quality.GOOD)]))
            await h.write(PointBatch.from_points([(path, T0, 4.0, Quality.UNCERTAIN)]))
            await h.flush()
            table = await h.latest([path])
            assert table.column("value").to_pylist() == [4.0]
            assert table.column("quality").to_pylist() == [int(Quality.UNCERTAIN)]
        async with running(store) as h:
            assert (await h.latest([path])).column("value").to_pylist() == [4.0]

    async def test_latest_leaves_out_tags_without_points(
        self, historian: ContractHistorian
    ) -> None:
        await historian.register_tags([TagMeta("a/quiet"), TagMeta("a/busy")])
        await historian.write(PointBatch.from_points([("a/busy", T0, 3.0, Quality.GOOD)]))
        await historian.flush()
        table = await historian.latest()
        assert table.column("path").to_pylist() == ["a/busy"]
        assert (await historian.latest(["a/quiet"])).num_rows == 0

    # --------------------------------------------------------------- tags and errors
    async def test_unknown_tag_raises(self, historian: ContractHistorian, data: Data) -> None:
        await write_all(historian, data)
        with pytest.raises(UnknownTagError) as raw:
            await historian.read_raw("plant/nowhere", T0, T0 * 2)
        assert raw.value.path == "plant/nowhere"
        with pytest.raises(UnknownTagError):
            await historian.read_aggregates(
                "plant/nowhere", T0, T0 * 2, bucket_ns=SECOND, aggregates=[Aggregate.AVG]
            )
        with pytest.raises(UnknownTagError):
            await historian.latest([PATHS[0], "plant/nowhere"])

    async def test_register_tags_round_trip(self, store: HistorianStore, data: Data) -> None:
        metas = [
            TagMeta("z/line/oven/temp", "degC", "oven air", DataType.FLOAT, -20.0, 400.0),
            TagMeta(
                "a/line/press/mode",
                description="operating mode",
                data_type=DataType.INT,
                states=((0, "off"), (1, "auto"), (2, "manual")),
            ),
            TagMeta(PATHS[0], "bar"),
        ]
        async with running(store) as h:
            await write_all(h, data)  # PATHS arrive first with bare metadata
            assert {m.path: m for m in await h.tags()}[PATHS[0]] == TagMeta(PATHS[0])
            await h.register_tags(metas)
            expected = {m.path: m for m in [TagMeta(p) for p in PATHS] + metas}
            want = [expected[p] for p in sorted(expected)]
            assert await h.tags() == want
            assert h.stats().tags == len(want)
        async with running(store) as h:
            assert await h.tags() == want
            table = await h.read_raw(PATHS[0], T0, T0 * 2, limit=10**6)
            assert len(table) == int(np.sum(data.path == PATHS[0]))

    # --------------------------------------------------------------------- lifecycle
    async def test_close_commits_pending_points(self, store: HistorianStore, data: Data) -> None:
        h = store.open(flush_interval_s=3600, flush_rows=10**9)
        await h.start()
        for batch in data.batches(np.random.default_rng(2), 5):
            await h.write(batch)
        await h.close()  # no flush
        await h.close()  # idempotent
        async with running(store) as h:
            for path in PATHS:
                table = await h.read_raw(path, 0, T0 * 2, limit=10**6)
                np.testing.assert_array_equal(ts_ns(table), np.sort(data.ts[data.path == path]))

    async def test_use_after_close_raises(self, store: HistorianStore) -> None:
        h = store.open()
        with pytest.raises(HistorianError):  # not started yet
            await h.read_raw("a/b", T0, T0 + 1)
        await h.start()
        await h.write(PointBatch.from_points([("a/b", T0, 1.0, Quality.GOOD)]))
        await h.flush()
        assert len(await h.read_raw("a/b", T0, T0 + 1)) == 1
        await h.close()
        with pytest.raises(ShutdownError):
            await h.write(PointBatch.from_points([("a/b", T0 + 1, 2.0, Quality.GOOD)]))
        with pytest.raises(ShutdownError):
            await h.write_acknowledged(seq_batch(1), edge="e", seq=1)
        with pytest.raises(ShutdownError):
            await h.read_raw("a/b", T0, T0 + 1)
        with pytest.raises(ShutdownError):
            await h.start()
        await h.flush()  # nothing left to commit

    async def test_failed_commit_is_reported_by_flush_and_writer_recovers(
        self, store: HistorianStore
    ) -> None:
        async with running(store, flush_interval_s=3600, flush_rows=10**9) as h:
            await h.write(PointBatch.from_points([("a/kept", T0, 1.0, Quality.GOOD)]))
            await h.flush()
            async with store.failing_commits():
                await h.write(
                    PointBatch.from_points(
                        [("a/kept", T0 + 1, 9.0, Quality.GOOD), ("a/lost", T0, 9.0, Quality.GOOD)]
                    )
                )
                with pytest.raises(HistorianError):
                    await h.flush()
                assert h.stats().points_pending == 0
            await h.flush()  # the failure was reported once
            await h.write(PointBatch.from_points([("a/kept", T0 + 2, 2.0, Quality.GOOD)]))
            await h.flush()
            kept = await h.read_raw("a/kept", T0, T0 + 10)
            assert kept.column("value").to_pylist() == [1.0, 2.0]
            with pytest.raises(UnknownTagError):  # its tag came with the failed commit
                await h.read_raw("a/lost", T0, T0 + 1)
            assert (await h.latest(["a/kept"])).column("value").to_pylist() == [2.0]

    # ------------------------------------------------------------------- concurrency
    async def test_concurrent_writers_and_readers_lose_nothing(self, store: HistorianStore) -> None:
        max_pending = 3_000
        writers, batches_each, size = 12, 20, 200
        done = asyncio.Event()
        peak = 0
        async with running(
            store, flush_interval_s=0.01, flush_rows=1_000, max_pending_rows=max_pending
        ) as h:

            async def writer(w: int) -> None:
                for k in range(batches_each):
                    ts = T0 + (w * batches_each + k) * size + np.arange(size)
                    tags = [f"w{w}/even", f"w{w}/odd"]
                    await h.write(PointBatch.from_columns(tags, np.arange(size) % 2, ts, ts % 1000))

            async def reader() -> None:
                nonlocal peak
                while not done.is_set():
                    peak = max(peak, h.stats().points_pending)
                    if "w0/even" in {m.path for m in await h.tags()}:
                        await h.read_raw("w0/even", T0, T0 * 2)
                        await h.read_aggregates(
                            "w0/even", T0, T0 * 2, bucket_ns=100, aggregates=list(Aggregate)
                        )
                        await h.latest()
                    await asyncio.sleep(0.002)

            async with asyncio.TaskGroup() as tg:
                for _ in range(3):
                    tg.create_task(reader())
                async with asyncio.TaskGroup() as wg:
                    for w in range(writers):
                        wg.create_task(writer(w))
                done.set()
            await h.flush()
            total = 0
            for w in range(writers):
                for parity in ("even", "odd"):
                    got = ts_ns(await h.read_raw(f"w{w}/{parity}", T0, T0 * 2, limit=10**6))
                    start = T0 + w * batches_each * size
                    want = np.arange(start, start + batches_each * size)
                    want = want[want % 2 == (0 if parity == "even" else 1)]
                    np.testing.assert_array_equal(got, want)
                    total += len(got)
            assert total == writers * batches_each * size
            assert h.stats().points_written == total
            assert peak <= max_pending
            assert h.backpressure_waits > 0

    # ------------------------------------------------------------------ exactly once
    async def test_same_batch_twice_in_sequence_is_stored_once(self, store: HistorianStore) -> None:
        async with running(store, flush_interval_s=60) as h:
            first = await h.write_acknowledged(seq_batch(1), edge="e1", seq=1)
            again = await h.write_acknowledged(seq_batch(1), edge="e1", seq=1)
            other_edge = await h.write_acknowledged(seq_batch(1), edge="e2", seq=1)
            assert (first.accepted, first.duplicate) == (50, False)
            assert (again.accepted, again.duplicate) == (0, True)
            assert (other_edge.accepted, other_edge.duplicate) == (50, False)  # seq is per edge
            assert await stored_per_seq(h) == {1: 100}
            stats = h.ledger_stats()
            assert (stats["e1"].batches, stats["e1"].points, stats["e1"].duplicates) == (1, 50, 1)
        assert await store.ledger_rows() == [("e1", 1, 50), ("e2", 1, 50)]

    async def test_duplicates_within_one_coalesced_commit(self, store: HistorianStore) -> None:
        # an ack waits up to 1 s for company: every write below lands in one commit
        async with running(store, flush_interval_s=60, ack_delay_s=1.0) as h:
            before = h.stats().flushes
            seqs = [1, 1, 2, 1, 3, 2]
            receipts = await asyncio.gather(
                *(h.write_acknowledged(seq_batch(s), edge="e", seq=s) for s in seqs)
            )
            assert h.stats().flushes == before + 1
            assert [r.duplicate for r in receipts] == [False, True, False, True, False, True]
            assert sum(r.accepted for r in receipts) == 150
            assert await stored_per_seq(h) == {1: 50, 2: 50, 3: 50}
        assert await store.ledger_rows() == [("e", 1, 50), ("e", 2, 50), ("e", 3, 50)]

    async def test_concurrent_resends_across_commits_store_each_batch_once(
        self, store: HistorianStore
    ) -> None:
        rng = np.random.default_rng(11)
        seqs = rng.permutation(np.repeat(np.arange(1, 41), 3)).tolist()  # every batch 3 times
        async with running(store, flush_interval_s=60) as h:
            receipts = []
            for chunk in np.array_split(np.array(seqs), 12):  # waves: some share commits
                receipts += await asyncio.gather(
                    *(h.write_acknowledged(seq_batch(int(s)), edge="e", seq=int(s)) for s in chunk)
                )
            fresh = [s for s, r in zip(seqs, receipts, strict=True) if not r.duplicate]
            assert sorted(fresh) == list(range(1, 41))  # exactly one "stored" answer each
            assert await stored_per_seq(h) == {s: 50 for s in range(1, 41)}
            assert h.ledger_stats()["e"].duplicates == 80

    async def test_ledger_survives_restart(self, store: HistorianStore) -> None:
        async with running(store, flush_interval_s=60) as h:
            for s in (1, 2, 3, 5):
                await h.write_acknowledged(seq_batch(s), edge="e", seq=s)
        async with running(store, flush_interval_s=60) as h:
            assert (await h.write_acknowledged(seq_batch(2), edge="e", seq=2)).duplicate
            assert (await h.write_acknowledged(seq_batch(5), edge="e", seq=5)).duplicate
            gap = await h.write_acknowledged(seq_batch(4), edge="e", seq=4)
            assert not gap.duplicate
            stats = h.ledger_stats()["e"]
            assert (stats.last_seq, stats.low_water, stats.gaps) == (5, 5, 0)
            assert await stored_per_seq(h) == {s: 50 for s in (1, 2, 3, 4, 5)}

    async def test_answer_comes_after_the_commit_not_the_flush_interval(
        self, store: HistorianStore
    ) -> None:
        async with running(store, flush_interval_s=60) as h:
            await h.write(seq_batch(9, tag="plant/line/plain"))  # waits up to 60 s to commit
            await h.write_acknowledged(seq_batch(1), edge="e", seq=1)
            # a reader sees the acknowledged points the moment the answer is there ...
            assert await stored_per_seq(h) == {1: 50}
            # ... and the plain batch queued before it went into the same commit
            assert await stored_per_seq(h, "plant/line/plain") == {9: 50}
            await h.write(seq_batch(10, tag="plant/line/later"))
            with pytest.raises(UnknownTagError):  # plain writes alone wait for the interval
                await h.read_raw("plant/line/later", 0, END)

    async def test_failed_commit_fails_the_waiters_and_leaves_no_ledger_row(
        self, store: HistorianStore
    ) -> None:
        async with running(store, flush_interval_s=60) as h:
            await h.write_acknowledged(seq_batch(1), edge="e", seq=1)
            async with store.failing_commits():
                results = await asyncio.gather(
                    h.write_acknowledged(seq_batch(2), edge="e", seq=2),
                    h.write_acknowledged(seq_batch(2), edge="e", seq=2),
                    h.write_acknowledged(seq_batch(1), edge="e", seq=1),  # committed before
                    return_exceptions=True,
                )
            assert isinstance(results[0], HistorianError)
            assert isinstance(results[1], HistorianError)  # its twin stood on the same commit
            assert not isinstance(results[2], BaseException)
            assert results[2].duplicate
            assert await stored_per_seq(h) == {1: 50}
            # the edge keeps the batch and sends it again: now it is stored, once
            again = await h.write_acknowledged(seq_batch(2), edge="e", seq=2)
            assert (again.accepted, again.duplicate) == (50, False)
            assert await stored_per_seq(h) == {1: 50, 2: 50}
        assert await store.ledger_rows() == [("e", 1, 50), ("e", 2, 50)]

    async def test_retention_prunes_old_rows_and_very_late_batches_count_as_duplicates(
        self, store: HistorianStore
    ) -> None:
        now = [T0]
        options: dict[str, Any] = {
            "flush_interval_s": 60,
            "ledger_retention_s": 86400,
            "clock": lambda: now[0],
        }
        async with running(store, **options) as h:
            for s in (1, 2, 4):  # 3 never arrives: the edge dropped it
                await h.write_acknowledged(seq_batch(s), edge="e", seq=s)
            now[0] = T0 + DAY + 120 * SECOND  # more than a day (and a minute) later
            await h.write_acknowledged(seq_batch(5), edge="e", seq=5)
            assert await h.prune_ledger() == 3  # seqs 1, 2, 4: older than a day, below the mark
            stats = h.ledger_stats()["e"]
            assert (stats.low_water, stats.abandoned, stats.gaps) == (5, 1, 0)
            # seq 3 arriving a day after seq 4 was committed is taken as applied (ledger.py)
            assert (await h.write_acknowledged(seq_batch(3), edge="e", seq=3)).duplicate
        assert await store.ledger_rows() == [("e", 5, 50)]
        assert await store.low_water_rows() == [("e", 5)]
        async with running(store, **options) as h:
            for s in (1, 3, 4, 5):  # pruned, given up, pruned, kept: all applied still
                assert (await h.write_acknowledged(seq_batch(s), edge="e", seq=s)).duplicate
            assert not (await h.write_acknowledged(seq_batch(6), edge="e", seq=6)).duplicate
            assert await stored_per_seq(h) == {s: 50 for s in (1, 2, 4, 5, 6)}

    async def test_empty_batch_still_takes_its_seq(self, historian: ContractHistorian) -> None:
        """An edge must be able to retire an empty batch: the ledger records it all the same."""
        first = await historian.write_acknowledged(PointBatch.empty(), edge="e", seq=1)
        assert (first.accepted, first.duplicate) == (0, False)
        assert (await historian.write_acknowledged(seq_batch(1), edge="e", seq=1)).duplicate
        assert await stored_per_seq(historian) == {}
        assert historian.ledger_stats()["e"].last_seq == 1

    @pytest.mark.parametrize(("edge", "seq", "field"), [("", 1, "edge"), ("e", 0, "seq")])
    async def test_bad_identity_is_a_payload_error(
        self, historian: ContractHistorian, edge: str, seq: int, field: str
    ) -> None:
        with pytest.raises(PayloadError) as info:
            await historian.write_acknowledged(seq_batch(1), edge=edge, seq=seq)
        assert info.value.field == field

    # -------------------------------------------------------------------- compaction
    async def test_compaction_keeps_every_point_and_takes_late_ones(
        self, store: HistorianStore, data: Data
    ) -> None:
        late = make_data(seed=8, per_tag=60, t0=T0 + SECOND // 3)  # into ranges compacted
        both = joined(data, late)
        async with running(store, flush_interval_s=60, compaction_interval_s=None) as h:
            await write_all(h, data)
            await assert_stored(h, data)
            assert (await h.compact()).points == len(data)  # every point, once
            await assert_stored(h, data)
            assert (await h.compact()).points == 0  # nothing new, nothing to do
            await write_all(h, late, batches=3)
            await assert_stored(h, both)  # the late ones beside the compacted ones ...
            await h.compact()
            await assert_stored(h, both)  # ... and compacted in turn
        async with running(store, compaction_interval_s=None) as h:
            await assert_stored(h, both)
            assert_latest_matches(await h.latest(list(PATHS)), both, list(PATHS))

    async def test_compaction_beside_writers_and_readers_loses_nothing(
        self, store: HistorianStore
    ) -> None:
        writers, batches_each, size = 6, 20, 150
        done = asyncio.Event()
        passes = 0
        options = {"flush_interval_s": 0.01, "compaction_interval_s": None}
        async with running(store, compaction_chunk_rows=500, **options) as h:

            def ts_of(w: int, k: int) -> npt.NDArray[np.int64]:
                # writer w's batch k: one point a minute, so the ranges span two days
                first = (w * batches_each + k) * size
                return T0 + (first + np.arange(size)) * 60 * SECOND

            async def writer(w: int) -> None:
                for k in range(batches_each):
                    ts = ts_of(w, k)
                    await h.write(PointBatch.from_columns([f"w{w}"], np.zeros(size), ts, ts % 97))
                    await asyncio.sleep(0)

            async def compactor() -> None:
                nonlocal passes
                while not done.is_set():
                    await h.compact()
                    passes += 1
                    if "w0" in {m.path for m in await h.tags()}:
                        await h.read_raw("w0", 0, T0 * 2)  # a reader beside it
                    await asyncio.sleep(0.005)

            async with asyncio.TaskGroup() as tg:
                tg.create_task(compactor())
                async with asyncio.TaskGroup() as wg:
                    for w in range(writers):
                        wg.create_task(writer(w))
                await h.flush()
                done.set()
            await h.compact()
            assert passes > 0
            for w in range(writers):
                want = np.concatenate([ts_of(w, k) for k in range(batches_each)])
                got = await h.read_raw(f"w{w}", 0, T0 * 2, limit=10**6)
                np.testing.assert_array_equal(ts_ns(got), want)  # each point once, in order
                np.testing.assert_array_equal(got.column("value").to_numpy(), want % 97)

    async def test_compaction_waits_until_a_range_is_closed(
        self, store: HistorianStore, data: Data
    ) -> None:
        now = [int(data.ts.max()) + 60 * SECOND]  # a minute after the last point
        options: dict[str, Any] = {"compaction_interval_s": None, "clock": lambda: now[0]}
        async with running(store, flush_interval_s=60, **options) as h:
            await write_all(h, data)
            assert (await h.compact()).points == 0  # its hour and day are still open
            now[0] += 2 * DAY
            assert (await h.compact()).points == len(data)
            await assert_stored(h, data)

    async def test_failed_compaction_changes_nothing(
        self, store: HistorianStore, data: Data
    ) -> None:
        async with running(store, flush_interval_s=60, compaction_interval_s=None) as h:
            await write_all(h, data)
            async with store.failing_compactions():
                with pytest.raises(HistorianError):
                    await h.compact()
                await assert_stored(h, data)
            assert (await h.compact()).points == len(data)  # all of it was still to do
            await assert_stored(h, data)


# ---------------------------------------------------------------------------- stores
class DuckDBStore:
    """The embedded historian over one DuckDB file."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def open(self, **options: Any) -> ContractHistorian:
        """A DuckDB historian over :attr:`path`."""
        from shopfloor.server.historian.duckdb import DuckDBHistorian

        return DuckDBHistorian(self.path, **options)

    async def ledger_rows(self) -> list[tuple[str, int, int]]:
        """The ``ingest_ledger`` rows, read from the closed file."""
        with duckdb.connect(str(self.path), read_only=True) as con:
            rows = con.execute("SELECT edge, seq, points FROM ingest_ledger ORDER BY edge, seq")
            return [(str(e), int(s), int(p)) for e, s, p in rows.fetchall()]

    async def low_water_rows(self) -> list[tuple[str, int]]:
        """The ``ingest_low_water`` rows, read from the closed file."""
        with duckdb.connect(str(self.path), read_only=True) as con:
            rows = con.execute("SELECT edge, low_water FROM ingest_low_water ORDER BY edge")
            return [(str(e), int(m)) for e, m in rows.fetchall()]

    @contextlib.asynccontextmanager
    async def failing_commits(self) -> AsyncIterator[None]:
        """A second connection holds an uncommitted update of every ``latest`` row.

        DuckDB then refuses the writer's update of the same rows ("Conflict on update").
        It shares the historian's database instance (same file, same configuration).
        """
        other = duckdb.connect(str(self.path), config={"memory_limit": "512MB"})
        try:
            other.begin()
            other.execute("UPDATE latest SET value = -1")
            yield
            other.rollback()
        finally:
            other.close()

    @contextlib.asynccontextmanager
    async def failing_compactions(self) -> AsyncIterator[None]:
        """A second connection holds an uncommitted delete of every point.

        A compaction step's delete of the same rows then conflicts and rolls back (the
        writer only appends points: its commits are not affected).
        """
        other = duckdb.connect(str(self.path), config={"memory_limit": "512MB"})
        try:
            other.begin()
            other.execute("DELETE FROM points")
            yield
            other.rollback()
        finally:
            other.close()


class PostgresStore:
    """The PostgreSQL historian over one database (schema ``shopfloor``)."""

    schema = "shopfloor"

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn

    def open(self, **options: Any) -> ContractHistorian:
        """A PostgreSQL historian over :attr:`dsn`."""
        from shopfloor.server.historian.postgres import PostgresHistorian

        return PostgresHistorian(self.dsn, schema=self.schema, **options)

    async def _rows(self, *statements: str) -> list[tuple[Any, ...]]:
        """Run ``statements`` on a connection of their own; return the last one's rows."""
        import psycopg

        rows: list[tuple[Any, ...]] = []
        async with await psycopg.AsyncConnection.connect(self.dsn, autocommit=True) as con:
            for statement in statements:
                cur = await con.execute(statement)
                rows = await cur.fetchall() if cur.description else []
        return rows

    async def ledger_rows(self) -> list[tuple[str, int, int]]:
        """The ``ingest_ledger`` rows."""
        rows = await self._rows(
            f"SELECT edge, seq, points FROM {self.schema}.ingest_ledger ORDER BY edge, seq"
        )
        return [(str(e), int(s), int(p)) for e, s, p in rows]

    async def low_water_rows(self) -> list[tuple[str, int]]:
        """The ``ingest_low_water`` rows."""
        rows = await self._rows(
            f"SELECT edge, low_water FROM {self.schema}.ingest_low_water ORDER BY edge"
        )
        return [(str(e), int(m)) for e, m in rows]

    @contextlib.asynccontextmanager
    async def failing_commits(self) -> AsyncIterator[None]:
        """A statement trigger on ``latest`` raises: every commit that stores points fails."""
        s = self.schema
        await self._rows(
            f"CREATE FUNCTION {s}.contract_fail() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN RAISE EXCEPTION 'commit refused by the contract test'; END $$",
            f"CREATE TRIGGER contract_fail BEFORE INSERT OR UPDATE ON {s}.latest "
            f"FOR EACH STATEMENT EXECUTE FUNCTION {s}.contract_fail()",
        )
        try:
            yield
        finally:
            await self._rows(
                f"DROP TRIGGER contract_fail ON {s}.latest", f"DROP FUNCTION {s}.contract_fail()"
            )

    @contextlib.asynccontextmanager
    async def failing_compactions(self) -> AsyncIterator[None]:
        """A statement trigger on ``points_cold`` raises: every compaction step fails."""
        s = self.schema
        await self._rows(
            f"CREATE FUNCTION {s}.contract_fail_cold() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN RAISE EXCEPTION 'compaction refused by the contract test'; END $$",
            f"CREATE TRIGGER contract_fail_cold BEFORE INSERT ON {s}.points_cold "
            f"FOR EACH STATEMENT EXECUTE FUNCTION {s}.contract_fail_cold()",
        )
        try:
            yield
        finally:
            await self._rows(
                f"DROP TRIGGER contract_fail_cold ON {s}.points_cold",
                f"DROP FUNCTION {s}.contract_fail_cold()",
            )


if TYPE_CHECKING:

    def _implements(duck: DuckDBStore, pg: PostgresStore) -> tuple[HistorianStore, ...]:
        return duck, pg
