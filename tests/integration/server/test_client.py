"""shopfloor.client against a real `shopfloor server` process (DuckDB historian).

Points go in over HTTP; what the client reads back is compared with numpy computations
over the points sent.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from shopfloor.client import (
    LATEST_SCHEMA,
    ApiError,
    ServerUnreachable,
    ShopfloorClient,
    TimeArg,
    to_pandas,
    to_polars,
)
from shopfloor.model import PointBatch, Quality, now_ns
from shopfloor.testing.historian_reference import reference_at, reference_buckets
from shopfloor.testing.processes import RunningProcess, free_port, shopfloor_process
from shopfloor.wire import ARROW_MEDIA_TYPE, encode_arrow

pytestmark = pytest.mark.system

SEC = 10**9
MINUTE = 60 * SEC
TAGS = ["acme/p1/line-1/cnc-1/spindle temp", "acme/p1/line-1/cnc-1/load"]
N = 900
T0 = (now_ns() - 3 * 3600 * SEC) // MINUTE * MINUTE  # whole minute, 3 h ago


def sent() -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Per tag: ts, value, quality (every 5th point Bad), 2 s apart with a phase."""
    rng = np.random.default_rng(5)
    out = {}
    for k, tag in enumerate(TAGS):
        ts = T0 + k * 700_000_000 + np.arange(N, dtype=np.int64) * 2 * SEC
        value = np.round(rng.normal(40 * (k + 1), 3, N), 4)
        quality = np.where(np.arange(N) % 5 == 2, Quality.BAD, Quality.GOOD).astype(np.uint32)
        out[tag] = (ts, value, quality)
    return out


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningProcess]:
    workdir: Path = tmp_path_factory.mktemp("client")
    port = free_port()
    (workdir / "server.toml").write_text(
        f'[server]\nport = {port}\ndata_dir = "data"\n[historian]\nflush_interval_s = 0.2\n'
    )
    with shopfloor_process(
        ["server", "--config", "server.toml"], port=port, workdir=workdir
    ) as run:
        with httpx.Client(base_url=run.base_url, timeout=30, headers=run.headers) as http:
            metas = [{"path": t, "unit": "degC" if i == 0 else "%"} for i, t in enumerate(TAGS)]
            assert http.put("/api/v1/tags", json={"tags": metas}).status_code == 200
            data = sent()
            rows = [
                (tag, int(t), float(v), int(q))
                for tag, (ts, values, quality) in data.items()
                for t, v, q in zip(ts, values, quality, strict=True)
            ]
            body = encode_arrow(PointBatch.from_points(rows), edge="client-test", seq=1)
            answer = http.post(
                "/api/v1/ingest", content=body, headers={"content-type": ARROW_MEDIA_TYPE}
            )
            assert answer.status_code == 200, answer.text  # committed when answered
        yield run
        assert run.stop() == 0, run.log()


@pytest.fixture
def client(server: RunningProcess) -> Iterator[ShopfloorClient]:
    with ShopfloorClient(server.base_url, token_file=server.token_file) as client:
        yield client


def test_tags_carry_their_metadata(client: ShopfloorClient) -> None:
    tags = {t.path: t for t in client.tags(prefix="acme/p1/line-1")}
    assert set(tags) == set(TAGS)
    assert tags[TAGS[0]].unit == "degC"
    assert tags[TAGS[0]].name == "spindle temp"
    assert tags[TAGS[0]].asset == "acme/p1/line-1/cnc-1"


def test_latest_is_the_last_point_sent_of_each_tag(client: ShopfloorClient) -> None:
    table = client.latest()
    assert table.schema == LATEST_SCHEMA
    data = sent()
    want = sorted((tag, int(ts[-1]), float(v[-1]), int(q[-1])) for tag, (ts, v, q) in data.items())
    got = list(
        zip(
            table.column("path").to_pylist(),
            table.column("ts").cast(pa.int64()).to_pylist(),
            table.column("value").to_pylist(),
            table.column("quality").to_pylist(),
            strict=True,
        )
    )
    assert got == want


def test_raw_history_in_small_pages_is_every_point_sent(client: ShopfloorClient) -> None:
    ts, value, quality = sent()[TAGS[0]]
    start = datetime.fromtimestamp(T0 / SEC, UTC)
    table = client.history(TAGS[0], start, start + timedelta(hours=1), page_size=37)
    assert table.column_names == ["ts", "value", "quality", "text"]
    assert table.schema.field("ts").type == pa.timestamp("ns", tz="UTC")
    np.testing.assert_array_equal(table.column("ts").cast(pa.int64()).to_numpy(), ts)
    np.testing.assert_array_equal(table.column("value").to_numpy(), value)
    np.testing.assert_array_equal(table.column("quality").to_numpy(), quality)


def test_buckets_match_an_independent_computation(client: ShopfloorClient) -> None:
    ts, value, quality = sent()[TAGS[1]]
    table = client.history(
        TAGS[1],
        T0,
        T0 + 3600 * SEC,
        bucket=timedelta(minutes=5),
        aggregates=["avg", "min", "count"],
        page_size=4,  # pages of buckets too
    )
    good = quality == Quality.GOOD
    buckets = ts[good] // (5 * MINUTE) * (5 * MINUTE)
    starts = np.unique(buckets)
    np.testing.assert_array_equal(table.column("ts").cast(pa.int64()).to_numpy(), starts)
    for i, b in enumerate(starts):
        mine = value[good][buckets == b]
        assert table.column("avg")[i].as_py() == pytest.approx(mine.mean(), rel=1e-12)
        assert table.column("min")[i].as_py() == mine.min()
        assert table.column("count")[i].as_py() == len(mine)


def test_history_many_is_one_long_table(client: ShopfloorClient) -> None:
    data = sent()
    table = client.history_many(TAGS, T0, "now", bucket="1h", aggregates=["count"])
    assert table.column_names == ["path", "ts", "count"]
    for tag in TAGS:
        mine = table.filter(pc.equal(table.column("path"), tag))
        assert sum(mine.column("count").to_pylist()) == int((data[tag][2] == Quality.GOOD).sum())


def test_buckets_of_many_tags_follow_a_half_hour_zone_across_pages(
    client: ShopfloorClient,
) -> None:
    data = sent()
    start, end = T0 - 2 * 3600 * SEC, T0 + 2 * 3600 * SEC
    # India is UTC+05:30 all year: its hours start at half past the UTC hour
    first = (start - 30 * MINUTE) // (60 * MINUTE) * (60 * MINUTE) + 30 * MINUTE
    edges = list(range(first, end + 60 * MINUTE, 60 * MINUTE))
    edges = edges[: next(i for i, e in enumerate(edges) if e >= end) + 1]
    table = client.buckets(
        TAGS,
        start,
        end,
        bucket="1h",
        aggregates=["avg", "count", "delta"],
        tz="Asia/Kolkata",
        page_size=2,  # a page per bucket or two: the pages must join seamlessly
    )
    assert table.column_names == ["path", "ts", "avg", "count", "delta", "bad"]
    assert table.schema.field("ts").type == pa.timestamp("ns", tz="UTC")
    n = len(edges) - 1
    assert table.column("path").to_pylist() == [TAGS[0]] * n + [TAGS[1]] * n
    assert table.column("ts").cast(pa.int64()).to_pylist() == edges[:-1] * 2
    for k, tag in enumerate(TAGS):
        ts, value, quality = data[tag]
        points = list(zip(ts.tolist(), value.tolist(), quality.tolist(), strict=True))
        want = reference_buckets(points, edges, start, end)
        mine = table.slice(k * n, n)
        assert mine.column("count").to_pylist() == [w["count"] for w in want]
        assert mine.column("bad").to_pylist() == [w["bad"] for w in want]
        for name in ("avg", "delta"):
            got = mine.column(name).to_pylist()
            assert got == [None if w[name] is None else pytest.approx(w[name]) for w in want]


@pytest.mark.parametrize("method", ["previous", "linear"])
def test_values_at_many_times_match_the_reference(client: ShopfloorClient, method: str) -> None:
    data = sent()
    rng = np.random.default_rng(8)
    # 300 times of nanosecond precision: more than one request carries
    times = np.sort(T0 - 600 * SEC + rng.integers(0, 2400 * SEC, 300)).tolist()
    times[0] = int(data[TAGS[1]][0][0])  # exactly at a point
    asked: list[TimeArg] = [*times[:-1], datetime.fromtimestamp(times[-1] // SEC, UTC)]
    times[-1] = times[-1] // SEC * SEC
    table = client.values_at(list(reversed(TAGS)), asked, method=method)
    assert table.column_names == ["path", "ts", "value"]
    assert table.column("path").to_pylist() == [TAGS[1]] * 300 + [TAGS[0]] * 300
    assert table.column("ts").cast(pa.int64()).to_pylist() == sorted(times) * 2
    for k, tag in enumerate(reversed(TAGS)):
        ts, value, quality = data[tag]
        points = list(zip(ts.tolist(), value.tolist(), quality.tolist(), strict=True))
        want = reference_at(points, sorted(times), method)
        got = table.column("value").to_pylist()[k * 300 : (k + 1) * 300]
        assert got == [None if w is None else pytest.approx(w) for w in want]


def test_server_errors_keep_their_code_and_field(client: ShopfloorClient) -> None:
    with pytest.raises(ApiError) as unknown:
        client.history("acme/p1/nowhere", "-1h")
    assert (unknown.value.status, unknown.value.code) == (404, "not_found")
    with pytest.raises(ApiError) as bad:
        client.history(TAGS[0], "-1h", bucket="5 parsecs")
    assert (bad.value.status, bad.value.field) == (422, "bucket")
    with pytest.raises(ApiError) as zone:
        client.buckets(TAGS, "-1h", bucket="1d", tz="Mars/Olympus_Mons")
    assert (zone.value.status, zone.value.field) == (422, "tz")
    with pytest.raises(ApiError) as method:
        client.values_at(TAGS, ["-1h"], method="cubic")
    assert (method.value.status, method.value.field) == (422, "method")


def test_naive_datetime_is_refused_before_sending(client: ShopfloorClient) -> None:
    with pytest.raises(ValueError, match="no time zone"):
        client.history(TAGS[0], datetime(2026, 1, 1))  # noqa: DTZ001 - the point of the test


def test_no_server_is_server_unreachable() -> None:
    with (
        ShopfloorClient(f"http://127.0.0.1:{free_port()}", timeout=2) as client,
        pytest.raises(ServerUnreachable),
    ):
        client.tags()


@pytest.mark.skipif(
    importlib.util.find_spec("pandas") is not None
    or importlib.util.find_spec("polars") is not None,
    reason="the message is for a machine without pandas and polars",
)
def test_dataframes_name_what_to_install() -> None:
    table = pa.table({"x": [1]})
    with pytest.raises(ImportError, match="pip install pandas"):
        to_pandas(table)
    with pytest.raises(ImportError, match="pip install polars"):
        to_polars(table)
