"""DuckDBHistorian: what it stores and answers, checked against independent numpy results."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import duckdb
import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pytest

from shopfloor.errors import HistorianError, PayloadError, ShutdownError, UnknownTagError
from shopfloor.model import DataType, PointBatch, Quality, TagMeta
from shopfloor.server.historian.base import Aggregate
from shopfloor.server.historian.duckdb import DuckDBHistorian
from shopfloor.server.historian.writer import Writer, sort_order

T0 = 1_700_000_000 * 10**9
SECOND = 10**9
PATHS = (
    "plant/line1/press/temp",
    "plant/line1/press/force",
    "plant/line2/oven/zone1",
    "plant/line2/oven/state",  # a text tag
)
TEXT_PATH = PATHS[3]


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


def make_data(seed: int, per_tag: int = 400) -> Data:
    """Irregular, unique-per-tag timestamps; some Bad/Uncertain points, NaNs and texts."""
    rng = np.random.default_rng(seed)
    cols: dict[str, list[npt.NDArray[np.generic]]] = {k: [] for k in Data.__annotations__}
    qualities = np.array(
        [Quality.GOOD, Quality.UNCERTAIN, Quality.BAD_SENSOR_FAILURE, Quality.BAD], np.uint32
    )
    for path in PATHS:
        ts = T0 + np.cumsum(rng.integers(1, 3 * SECOND, per_tag))
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


def ts_ns(table: pa.Table, column: str = "ts") -> npt.NDArray[np.int64]:
    return np.asarray(table.column(column).cast(pa.int64()).to_numpy(), dtype=np.int64)


def writer_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("historian-")]


@pytest.fixture(autouse=True)
def no_leaked_threads() -> Iterator[None]:
    before = set(threading.enumerate())
    yield
    leaked = [t.name for t in threading.enumerate() if t not in before and t.is_alive()]
    assert leaked == []


@pytest.fixture
async def historian() -> AsyncIterator[DuckDBHistorian]:
    h = DuckDBHistorian(None, flush_interval_s=0.05)
    await h.start()
    yield h
    await h.close()


@pytest.fixture
def data() -> Data:
    return make_data(seed=7)


async def write_all(h: DuckDBHistorian, data: Data, *, batches: int = 9, seed: int = 1) -> None:
    """Write shuffled batches, one commit each, so storage order is not time order."""
    for batch in data.batches(np.random.default_rng(seed), batches):
        await h.write(batch)
        await h.flush()


# ------------------------------------------------------------------------- raw reads
async def test_read_raw_matches_numpy_filter_and_sort(
    historian: DuckDBHistorian, data: Data
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
            np.testing.assert_array_equal(ts_ns(table), data.ts[m][order])
            np.testing.assert_array_equal(table.column("value").to_numpy(), data.value[m][order])
            np.testing.assert_array_equal(
                table.column("quality").to_numpy(), data.quality[m][order]
            )
            assert table.column("text").to_pylist() == list(data.text[m][order])
        limit = int(rng.integers(1, 30))
        start = int(own[5])
        table = await historian.read_raw(path, start, T0 * 2, limit=limit)
        np.testing.assert_array_equal(ts_ns(table), own[5 : 5 + limit])


async def test_reads_see_only_committed_points(data: Data) -> None:
    h = DuckDBHistorian(None, flush_interval_s=3600, flush_rows=10**9)
    await h.start()
    try:
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
    finally:
        await h.close()


@pytest.mark.parametrize("span", [10**9, 2**61], ids=["combined-key", "lexsort-fallback"])
def test_sort_order_is_stable_lexsort(span: int) -> None:
    rng = np.random.default_rng(11)
    tag_id = rng.integers(1, 50, 5000).astype(np.int32)
    ts = rng.integers(0, span, 5000, dtype=np.int64)
    ts[::7] = ts[1::7][: len(ts[::7])]  # duplicate timestamps: ties must keep input order
    tag_id[::7] = tag_id[1::7][: len(tag_id[::7])]
    np.testing.assert_array_equal(sort_order(tag_id, ts), np.lexsort((ts, tag_id)))


# ------------------------------------------------------------------------ aggregates
def numpy_aggregates(
    data: Data, path: str, start: int, end: int, bucket: int
) -> dict[str, npt.NDArray[np.float64]]:
    m = (
        (data.path == path)
        & (data.ts >= start)
        & (data.ts < end)
        & ((data.quality & np.uint32(0xC0000000)) == 0)
        & ~np.isnan(data.value)
    )
    ts, value = data.ts[m], data.value[m]
    buckets = (ts // bucket) * bucket
    out: dict[str, list[float]] = {k: [] for k in ["ts", *(a.value for a in Aggregate)]}
    for b in np.unique(buckets):
        t, v = ts[buckets == b], value[buckets == b]
        out["ts"].append(b)
        out["avg"].append(v.mean())
        out["min"].append(v.min())
        out["max"].append(v.max())
        out["first"].append(v[np.argmin(t)])
        out["last"].append(v[np.argmax(t)])
        out["count"].append(len(v))
    return {k: np.asarray(v) for k, v in out.items()}


@pytest.mark.parametrize("bucket", [SECOND, 7 * SECOND, 60 * SECOND, 10**6 * SECOND])
async def test_aggregates_match_numpy_groupby(
    historian: DuckDBHistorian, data: Data, bucket: int
) -> None:
    await write_all(historian, data)
    for path in PATHS[:3]:
        own = np.sort(data.ts[data.path == path])
        start, end = int(own[13]), int(own[377])
        table = await historian.read_aggregates(
            path, start, end, bucket_ns=bucket, aggregates=list(Aggregate)
        )
        expected = numpy_aggregates(data, path, start, end, bucket)
        assert table.column_names == ["ts", "avg", "min", "max", "first", "last", "count"]
        assert table.schema.field("count").type == pa.int64()
        assert len(expected["ts"]) > 0
        np.testing.assert_array_equal(ts_ns(table), expected["ts"])
        for agg in Aggregate:
            got = table.column(agg.value).to_numpy()
            np.testing.assert_allclose(got, expected[agg.value], rtol=1e-12, err_msg=agg.value)


async def test_aggregates_subset_in_asked_order_and_text_tag_empty(
    historian: DuckDBHistorian, data: Data
) -> None:
    await write_all(historian, data)
    path = PATHS[1]
    table = await historian.read_aggregates(
        path, T0, T0 * 2, bucket_ns=30 * SECOND, aggregates=[Aggregate.COUNT, Aggregate.MAX]
    )
    assert table.column_names == ["ts", "count", "max"]
    expected = numpy_aggregates(data, path, T0, T0 * 2, 30 * SECOND)
    np.testing.assert_array_equal(table.column("count").to_numpy(), expected["count"])
    # a text tag has no numeric Good points: no bucket at all
    text = await historian.read_aggregates(
        TEXT_PATH, T0, T0 * 2, bucket_ns=SECOND, aggregates=[Aggregate.AVG]
    )
    assert text.num_rows == 0


async def test_bad_query_arguments_are_payload_errors(
    historian: DuckDBHistorian, data: Data
) -> None:
    await write_all(historian, data)
    with pytest.raises(PayloadError):
        await historian.read_aggregates(
            PATHS[0], T0, T0 * 2, bucket_ns=0, aggregates=[Aggregate.AVG]
        )
    with pytest.raises(PayloadError):
        await historian.read_raw(PATHS[0], T0, T0 * 2, limit=-1)


# ---------------------------------------------------------------------------- latest
def assert_latest_matches(table: pa.Table, data: Data, paths: list[str]) -> None:
    idx = [data.last(p) for p in paths]
    assert table.column("path").to_pylist() == paths
    np.testing.assert_array_equal(ts_ns(table), data.ts[idx])
    np.testing.assert_array_equal(table.column("value").to_numpy(), data.value[idx])
    np.testing.assert_array_equal(table.column("quality").to_numpy(), data.quality[idx])
    assert table.column("text").to_pylist() == list(data.text[idx])


async def test_latest_is_last_by_ts_and_survives_restart(tmp_path: Path, data: Data) -> None:
    db = tmp_path / "nested" / "historian.duckdb"
    h = DuckDBHistorian(db, flush_interval_s=0.05)
    await h.start()
    # one flush per batch, shuffled: later commits carry older points too
    for batch in data.batches(np.random.default_rng(5), 12):
        await h.write(batch)
        await h.flush()
    assert_latest_matches(await h.latest(), data, sorted(PATHS))
    some = [PATHS[2], PATHS[0]]
    assert_latest_matches(await h.latest(some), data, some)
    await h.close()

    reopened = DuckDBHistorian(db)
    await reopened.start()
    try:
        assert_latest_matches(await reopened.latest(), data, sorted(PATHS))
        # the rebuilt cache keeps working: a newer point replaces, an older one does not
        newer = PointBatch.from_points(
            [(PATHS[0], T0 * 2, 1.5, Quality.GOOD), (PATHS[1], T0 - 1, 2.5, Quality.GOOD)]
        )
        await reopened.write(newer)
        await reopened.flush()
        table = await reopened.latest([PATHS[0], PATHS[1]])
        assert ts_ns(table).tolist() == [T0 * 2, int(data.ts[data.last(PATHS[1])])]
        assert table.column("value").to_pylist()[0] == 1.5
    finally:
        await reopened.close()


async def test_latest_leaves_out_tags_without_points(historian: DuckDBHistorian) -> None:
    await historian.register_tags([TagMeta("a/quiet"), TagMeta("a/busy")])
    await historian.write(PointBatch.from_points([("a/busy", T0, 3.0, Quality.GOOD)]))
    await historian.flush()
    table = await historian.latest()
    assert table.column("path").to_pylist() == ["a/busy"]


# ------------------------------------------------------------------- tags and errors
async def test_unknown_tag_raises(historian: DuckDBHistorian, data: Data) -> None:
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


async def test_register_tags_round_trip(tmp_path: Path, data: Data) -> None:
    db = tmp_path / "h.duckdb"
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
    h = DuckDBHistorian(db)
    await h.start()
    await write_all(h, data)  # PATHS arrive first with bare metadata
    assert {m.path: m for m in await h.tags()}[PATHS[0]] == TagMeta(PATHS[0])
    await h.register_tags(metas)
    expected = {m.path: m for m in [TagMeta(p) for p in PATHS] + metas}
    want = [expected[p] for p in sorted(expected)]
    assert await h.tags() == want
    assert h.stats().tags == len(want)
    await h.close()

    h = DuckDBHistorian(db)
    await h.start()
    try:
        assert await h.tags() == want
        table = await h.read_raw(PATHS[0], T0, T0 * 2, limit=10**6)
        assert len(table) == int(np.sum(data.path == PATHS[0]))
    finally:
        await h.close()


# ------------------------------------------------------------------------- lifecycle
async def test_close_commits_pending_points(tmp_path: Path, data: Data) -> None:
    db = tmp_path / "h.duckdb"
    h = DuckDBHistorian(db, flush_interval_s=3600, flush_rows=10**9)
    await h.start()
    for batch in data.batches(np.random.default_rng(2), 5):
        await h.write(batch)
    await h.close()  # no flush
    await h.close()  # idempotent

    h = DuckDBHistorian(db)
    await h.start()
    try:
        for path in PATHS:
            table = await h.read_raw(path, 0, T0 * 2, limit=10**6)
            np.testing.assert_array_equal(ts_ns(table), np.sort(data.ts[data.path == path]))
    finally:
        await h.close()


async def test_write_after_close_raises_and_threads_are_joined() -> None:
    h = DuckDBHistorian(None)
    await h.start()
    await h.write(PointBatch.from_points([("a/b", T0, 1.0, Quality.GOOD)]))
    await h.flush()
    assert len(await h.read_raw("a/b", T0, T0 + 1)) == 1  # starts a reader thread
    thread = h.writer_thread
    assert thread is not None
    assert thread.is_alive()
    await h.close()
    assert not thread.is_alive()
    assert writer_threads() == []
    with pytest.raises(ShutdownError):
        await h.write(PointBatch.from_points([("a/b", T0 + 1, 2.0, Quality.GOOD)]))
    with pytest.raises(ShutdownError):
        await h.read_raw("a/b", T0, T0 + 1)
    await h.flush()  # nothing left to commit


async def test_unopenable_file_is_a_historian_error(tmp_path: Path) -> None:
    not_a_db = tmp_path / "garbage.duckdb"
    not_a_db.write_bytes(b"this is not a database" * 1000)
    h = DuckDBHistorian(not_a_db)
    with pytest.raises(HistorianError):
        await h.start()
    assert writer_threads() == []


async def test_failed_commit_is_reported_by_flush_and_writer_recovers(
    historian: DuckDBHistorian, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = Writer._transaction
    calls = 0

    def fail_once(*args: object) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise duckdb.IOException("disk full")
        real(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(Writer, "_transaction", staticmethod(fail_once))
    await historian.write(PointBatch.from_points([("a/lost", T0, 1.0, Quality.GOOD)]))
    with pytest.raises(HistorianError):
        await historian.flush()
    assert historian.stats().points_pending == 0
    await historian.write(PointBatch.from_points([("a/kept", T0, 2.0, Quality.GOOD)]))
    await historian.flush()
    assert (await historian.read_raw("a/kept", T0, T0 + 1)).column("value").to_pylist() == [2.0]
    with pytest.raises(UnknownTagError):
        await historian.read_raw("a/lost", T0, T0 + 1)


# ----------------------------------------------------------------------- concurrency
async def test_concurrent_writers_and_readers_lose_nothing() -> None:
    max_pending = 3_000
    h = DuckDBHistorian(None, flush_interval_s=0.01, flush_rows=1_000, max_pending_rows=max_pending)
    await h.start()
    writers, batches_each, size = 12, 20, 200
    done = asyncio.Event()
    peak = 0

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

    try:
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
    finally:
        await h.close()


# --------------------------------------------------------------------- crash safety
_CHILD = textwrap.dedent(
    """
    import asyncio, sys
    from pathlib import Path
    import numpy as np
    from shopfloor.model import PointBatch
    from shopfloor.server.historian.duckdb import DuckDBHistorian

    async def main():
        h = DuckDBHistorian(Path(sys.argv[1]), flush_interval_s=3600, flush_rows=10**9)
        await h.start()
        n = 5000
        ts = 10**18 + np.arange(n)
        await h.write(PointBatch.from_columns(["t/a", "t/b"], ts % 2, ts, ts % 997))
        await h.flush()
        await h.write(PointBatch.from_columns(["t/a"], [0], [2 * 10**18], [-1.0]))
        print("flushed", flush=True)
        await asyncio.sleep(3600)

    asyncio.run(main())
    """
)


def test_flushed_points_survive_sigkill(tmp_path: Path) -> None:
    db = tmp_path / "h.duckdb"
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(db)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "flushed"
    finally:
        child.kill()  # SIGKILL: no close, no checkpoint
        child.wait()
        if child.stdout is not None:
            child.stdout.close()

    async def check() -> None:
        h = DuckDBHistorian(db)
        await h.start()
        try:
            ts = 10**18 + np.arange(5000)
            a = await h.read_raw("t/a", 0, 3 * 10**18, limit=10**6)
            np.testing.assert_array_equal(ts_ns(a), ts[ts % 2 == 0])
            np.testing.assert_array_equal(a.column("value").to_numpy(), (ts % 997)[ts % 2 == 0])
            latest = await h.latest(["t/a", "t/b"])
            assert ts_ns(latest).tolist() == [int(ts[-2]), int(ts[-1])]
        finally:
            await h.close()

    asyncio.run(check())
