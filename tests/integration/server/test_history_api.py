"""GET /api/v1/history (the Grafana Infinity endpoint) over real HTTP, DuckDB historian.

Expected answers are computed here from the points sent, in plain Python and numpy.
"""

from __future__ import annotations

import csv
import io
from collections import defaultdict
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from shopfloor.model import PointBatch, Quality
from shopfloor.server.api.routes.history import MAX_TAGS, TRUNCATED_HEADER
from shopfloor.wire import ARROW_MEDIA_TYPE, encode_arrow

from .conftest import MakePlatform, Platform

SEC = 10**9
MS = 10**6
T0 = 1_767_225_600 * SEC  # 2026-01-01T00:00:00Z
TAGS = ["acme/p1/line-1/cnc-1/temp", "acme/p1/line-1/cnc-1/load", "acme/p1/line-2/press/force"]
N = 400  # per tag
NOW = T0 + 3600 * SEC


def points() -> list[tuple[str, int, float, int]]:
    """Each tag: N points, 1.5 s apart with per-tag phase, every 7th one Bad."""
    rng = np.random.default_rng(11)
    rows = []
    for k, tag in enumerate(TAGS):
        ts = T0 + k * 250 * MS + np.arange(N) * 1500 * MS
        values = np.round(rng.normal(50 + 10 * k, 5, N), 3)
        for i in range(N):
            quality = Quality.BAD_SENSOR_FAILURE if i % 7 == 3 else Quality.GOOD
            rows.append((tag, int(ts[i]), float(values[i]), int(quality)))
    return rows


def iso(ns: int) -> str:
    moment = datetime.fromtimestamp(ns // SEC, UTC).replace(microsecond=(ns % SEC) // 1000)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{(ns % SEC) // MS:03d}Z"


@pytest.fixture
async def platform(make_platform: MakePlatform) -> Platform:
    platform = await make_platform(clock=lambda: NOW)
    body = encode_arrow(PointBatch.from_points(points()), edge="edge-h", seq=1)
    answer = await platform.client.post(
        "/api/v1/ingest", content=body, headers={"content-type": ARROW_MEDIA_TYPE}
    )
    assert answer.status_code == 200, answer.text  # answered after commit
    return platform


async def get(platform: Platform, **params: Any) -> Any:
    response = await platform.client.get("/api/v1/history", params=params)
    assert response.status_code == 200, response.text
    return response


def expected_raw(tags: list[str], start: int, end: int) -> list[dict[str, Any]]:
    order = {t: i for i, t in enumerate(tags)}
    rows = [p for p in points() if p[0] in order and start <= p[1] < end]
    rows.sort(key=lambda p: (p[1], order[p[0]]))
    return [
        {"time": iso(ts), "path": tag, "value": v, "quality": q, "text": None}
        for tag, ts, v, q in rows
    ]


def expected_buckets(
    tags: list[str], start: int, end: int, bucket: int
) -> dict[tuple[int, str], list[float]]:
    """Good values per (bucket start, tag)."""
    groups: dict[tuple[int, str], list[float]] = defaultdict(list)
    for tag, ts, v, q in points():
        if tag in tags and start <= ts < end and q == Quality.GOOD:
            groups[(ts // bucket * bucket, tag)].append(v)
    return groups


def expected_bad(tags: list[str], start: int, end: int, bucket: int) -> dict[tuple[int, str], int]:
    """Points that are not Good per (bucket start, tag)."""
    counts: dict[tuple[int, str], int] = defaultdict(int)
    for tag, ts, _, q in points():
        if tag in tags and start <= ts < end and q != Quality.GOOD:
            counts[(ts // bucket * bucket, tag)] += 1
    return counts


async def test_raw_points_of_several_tags_with_epoch_ms_times(platform: Platform) -> None:
    start, end = T0 + 30 * SEC, T0 + 90 * SEC
    tags = [TAGS[2], TAGS[0]]
    response = await get(
        platform, tags=",".join(tags), **{"from": str(start // MS), "to": str(end // MS)}
    )
    assert response.headers["content-type"] == "application/json"
    assert response.headers[TRUNCATED_HEADER] == "false"
    assert response.json() == expected_raw(tags, start, end)


async def test_buckets_per_interval_ms_match_an_independent_average(platform: Platform) -> None:
    start, end, bucket = T0, T0 + 600 * SEC, 60 * SEC
    rows = (
        await get(
            platform,
            tags=TAGS,  # repeated parameter
            interval_ms=bucket // MS,
            agg="avg,max,count",
            **{"from": str(start // MS), "to": str(end // MS)},
        )
    ).json()
    groups = expected_buckets(TAGS, start, end, bucket)
    bad = expected_bad(TAGS, start, end, bucket)
    keys = sorted(groups, key=lambda k: (k[0], TAGS.index(k[1])))
    assert [(r["time"], r["path"]) for r in rows] == [(iso(b), t) for b, t in keys]
    for row, key in zip(rows, keys, strict=True):
        assert list(row) == ["time", "path", "avg", "max", "count", "bad"]
        assert row["bad"] == bad[key]
        assert row["avg"] == pytest.approx(float(np.mean(groups[key])), rel=1e-12)
        assert row["max"] == max(groups[key])
        assert row["count"] == len(groups[key])


async def test_wide_shape_has_one_column_per_tag_with_nulls_where_missing(
    platform: Platform,
) -> None:
    start, end, bucket = T0, T0 + 300 * SEC, 20 * SEC
    rows = (
        await get(
            platform,
            tags=",".join(TAGS),
            interval_ms=bucket // MS,
            shape="wide",
            time_format="ms",
            **{"from": iso(start), "to": iso(end)},
        )
    ).json()
    groups = expected_buckets(TAGS, start, end, bucket)
    times = sorted({b for b, _ in groups})
    assert [r["time"] for r in rows] == [b // MS for b in times]
    for row, b in zip(rows, times, strict=True):
        assert list(row) == ["time", *TAGS]
        for tag in TAGS:
            want = groups.get((b, tag))
            if want is None:
                assert row[tag] is None
            else:
                assert row[tag] == pytest.approx(float(np.mean(want)), rel=1e-12)


async def test_wide_raw_points_pivot_by_time(platform: Platform) -> None:
    start, end = T0, T0 + 20 * SEC
    rows = (
        await get(platform, tags=TAGS[:2], shape="wide", **{"from": iso(start), "to": iso(end)})
    ).json()
    raw = [p for p in points() if p[0] in TAGS[:2] and start <= p[1] < end]
    by_time: dict[int, dict[str, float]] = defaultdict(dict)
    for tag, ts, v, _ in raw:
        by_time[ts][tag] = v
    assert rows == [
        {"time": iso(ts), **{t: by_time[ts].get(t) for t in TAGS[:2]}} for ts in sorted(by_time)
    ]


async def test_csv_has_the_same_rows_as_json(platform: Platform) -> None:
    params = {"tags": ",".join(TAGS), "from": iso(T0), "to": iso(T0 + 120 * SEC)}
    params |= {"interval_ms": "30000", "agg": "min,last"}
    as_json = (await get(platform, **params)).json()
    response = await get(platform, **params, format="csv")
    assert response.headers["content-type"] == "text/csv; charset=utf-8"
    reader = list(csv.DictReader(io.StringIO(response.text)))
    assert reader
    assert list(reader[0]) == ["time", "path", "min", "last", "bad"]
    assert [
        {
            "time": r["time"],
            "path": r["path"],
            "min": float(r["min"]),
            "last": float(r["last"]),
            "bad": int(r["bad"]),
        }
        for r in reader
    ] == as_json


async def test_parquet_holds_the_points_of_the_json_answer_typed(platform: Platform) -> None:
    params = {"tags": ",".join(TAGS[:2]), "from": iso(T0), "to": iso(T0 + 60 * SEC)}
    response = await get(platform, **params, format="parquet")
    assert response.headers["content-type"] == "application/vnd.apache.parquet"
    assert "attachment" in response.headers["content-disposition"]
    table = pq.read_table(io.BytesIO(response.content))
    # the layout `shopfloor export` writes: a UTC timestamp, the path as text
    assert table.schema.field("ts").type == pa.timestamp("ns", tz="UTC")
    assert table.schema.field("path").type == pa.string()
    assert table.schema.field("quality").type == pa.uint32()
    ns = table.column("ts").cast(pa.int64()).to_pylist()
    rows = [
        {"time": iso(t), "path": p, "value": v, "quality": q, "text": x}
        for t, p, v, q, x in zip(
            ns,
            table.column("path").to_pylist(),
            table.column("value").to_pylist(),
            table.column("quality").to_pylist(),
            table.column("text").to_pylist(),
            strict=True,
        )
    ]
    assert rows == expected_raw(TAGS[:2], T0, T0 + 60 * SEC)
    bucketed = await get(platform, **params, interval="30s", agg="avg", format="parquet")
    as_json = (await get(platform, **params, interval="30s", agg="avg")).json()
    buckets = pq.read_table(io.BytesIO(bucketed.content))
    assert buckets.column("avg").to_pylist() == [r["avg"] for r in as_json]
    assert buckets.column("path").to_pylist() == [r["path"] for r in as_json]


async def test_relative_times_use_the_server_clock(platform: Platform) -> None:
    # NOW is T0 + 1 h: "now-60m" is T0
    rows = (await get(platform, tags=TAGS[1], **{"from": "now-60m", "to": "now-59m"})).json()
    assert rows == expected_raw([TAGS[1]], T0, T0 + 60 * SEC)


async def test_prefix_selects_every_tag_below_an_asset(platform: Platform) -> None:
    rows = (
        await get(platform, prefix="acme/p1/line-1", **{"from": iso(T0), "to": iso(T0 + 5 * SEC)})
    ).json()
    line1 = sorted(t for t in TAGS if t.startswith("acme/p1/line-1/"))
    assert rows == expected_raw(line1, T0, T0 + 5 * SEC)


async def test_limit_per_tag_sets_the_truncated_header(platform: Platform) -> None:
    response = await get(platform, tags=TAGS[0], limit=10, **{"from": iso(T0), "to": iso(NOW)})
    assert response.headers[TRUNCATED_HEADER] == "true"
    assert response.json() == expected_raw([TAGS[0]], T0, NOW)[:10]


@pytest.mark.parametrize(
    ("params", "status", "field"),
    [
        ({"from": "yesterday"}, 422, "from"),
        ({"to": "2026-13-01"}, 422, "to"),
        ({"to": "9999999999999999"}, 422, "to"),  # epoch ms beyond int64 nanoseconds
        ({"from": "now", "to": "now-1h"}, 422, "from"),
        ({"interval_ms": "0"}, 422, "interval_ms"),
        ({"interval_ms": "1m"}, 422, "interval_ms"),
        ({"interval_ms": str(10**15)}, 422, "interval_ms"),  # wider than a century
        ({"interval_ms": "1", "from": "now-7d"}, 422, "interval_ms"),  # too many buckets
        ({"interval_ms": "1000", "agg": "median"}, 422, "agg"),
        ({"interval": "1d", "agg": "twa,median"}, 422, "agg"),
        ({"interval": "1x"}, 422, "interval"),
        ({"interval": "0d"}, 422, "interval"),
        ({"interval": "200y"}, 422, "interval"),
        ({"interval": "1s", "from": "now-7d"}, 422, "interval"),  # too many buckets
        ({"interval": "1d", "interval_ms": "1000"}, 422, "interval"),
        ({"interval": "1d", "tz": "Mars/Olympus_Mons"}, 422, "tz"),
        ({"interval": "1d", "tz": "../../etc/passwd"}, 422, "tz"),
        ({"tz": "Europe/Berlin"}, 422, "tz"),  # raw points have no buckets
        ({"fill": "null"}, 422, "fill"),
        ({"interval": "1h", "fill": "zero"}, 422, "fill"),
        # the historian's own refusal ("start"), named as the parameter that was sent
        ({"interval": "1d", "tz": "Europe/Berlin", "from": "1800-01-01"}, 422, "from"),
        ({"agg": "avg"}, 422, "agg"),
        ({"format": "xml"}, 422, "format"),
        ({"shape": "tall"}, 422, "shape"),
        ({"time_format": "s"}, 422, "time_format"),
        ({"limit": "0"}, 422, "limit"),
        ({"tags": ""}, 422, "tags"),
        ({"tags": ",".join(f"a/b{i}" for i in range(MAX_TAGS + 1))}, 422, "tags"),
        ({"prefix": "acme/p1"}, 422, "prefix"),  # with tags
        ({"tags": f"{TAGS[0]},acme/p1/nope"}, 404, "tags"),
    ],
)
async def test_every_malformed_parameter_is_named_in_the_error_envelope(
    platform: Platform, params: dict[str, str], status: int, field: str
) -> None:
    response = await platform.client.get("/api/v1/history", params={"tags": TAGS[0], **params})
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["field"] == field
    assert error["message"]


async def test_missing_tags_and_prefix_is_named(platform: Platform) -> None:
    response = await platform.client.get("/api/v1/history")
    assert response.status_code == 422
    assert response.json()["error"]["field"] == "tags"


async def test_empty_range_is_an_empty_table(platform: Platform) -> None:
    params = {"tags": TAGS[0], "from": iso(NOW), "to": iso(NOW + SEC)}
    assert (await get(platform, **params)).json() == []
    assert (await get(platform, **params, format="csv")).text == (
        '"time","path","value","quality","text"\n'
    )


async def test_text_values_are_escaped_in_json_and_csv(platform: Platform) -> None:
    tag = "acme/p1/line-1/cnc-1/program"
    texts = ['O1000 "roughing"', "line\nbreak, comma", "back\\slash", "ünïcödé ✓"]
    stamps = [T0 + i * SEC for i in range(len(texts))]
    batch = PointBatch.from_points([(tag, t, x, 0) for t, x in zip(stamps, texts, strict=True)])
    answer = await platform.client.post(
        "/api/v1/ingest",
        content=encode_arrow(batch, edge="edge-h", seq=2),
        headers={"content-type": ARROW_MEDIA_TYPE},
    )
    assert answer.status_code == 200, answer.text
    params = {"tags": tag, "from": iso(T0), "to": iso(T0 + 10 * SEC)}
    want = [
        {"time": iso(t), "path": tag, "value": None, "quality": 0, "text": x}
        for t, x in zip(stamps, texts, strict=True)
    ]
    assert (await get(platform, **params)).json() == want
    reader = csv.DictReader(io.StringIO((await get(platform, **params, format="csv")).text))
    assert [(r["time"], r["value"], r["text"]) for r in reader] == [
        (w["time"], "", w["text"]) for w in want
    ]
