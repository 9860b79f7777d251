"""The historian's query semantics through the HTTP API, over real uvicorn, on both backends.

``/api/v1/history`` with time zones, calendar intervals, every aggregate and ``bad``;
``/api/v1/tags/{path}/series`` with the same; ``/api/v1/values/at``. Expected answers
come from :mod:`shopfloor.testing.historian_reference` (plain Python loops over the points
sent) with bucket edges computed here from :mod:`zoneinfo`, and from the counter's own
increments, never from the code under test.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import numpy as np
import pyarrow as pa
import pytest
import uvicorn

from shopfloor.model import LiveBatch, PointBatch, Quality
from shopfloor.runtime.channels import Channel
from shopfloor.server.api import create_app
from shopfloor.server.historian import query
from shopfloor.server.historian.base import Historian
from shopfloor.server.ingest import Ingestor
from shopfloor.testing.auth import grant
from shopfloor.testing.historian_reference import reference_at, reference_buckets
from shopfloor.testing.postgres import PostgresServer
from shopfloor.wire import ARROW_MEDIA_TYPE, encode_arrow

from .conftest import MakePlatform, Platform
from .history_backends import Backend

SEC = 10**9
MS = 10**6
MINUTE = 60 * SEC
HOUR = 60 * MINUTE
BERLIN = ZoneInfo("Europe/Berlin")
TEMP = "acme/p1/line-1/oven/temp"
COUNTER = "acme/p1/line-1/press/strokes"
AGGREGATES = ["avg", "twa", "min", "max", "first", "last", "count", "sum", "stddev", "delta"]


def berlin(month: int, day: int, hour: int = 0, minute: int = 0) -> int:
    """A Berlin wall-clock time of 2026 in UTC nanoseconds (zoneinfo, not the code under test)."""
    return int(datetime(2026, month, day, hour, minute, tzinfo=BERLIN).timestamp()) * SEC


START, END = berlin(3, 27), berlin(4, 1)
DAYS = [berlin(3, d) for d in range(27, 32)] + [END]  # local midnights; 29 March has 23 h
GAP = (berlin(3, 30, 2), berlin(3, 30, 7))  # the oven tag sends nothing here
RESET_AT = berlin(3, 29, 1, 5)  # the press counter restarts from zero, in the DST night
NOW = END + 24 * HOUR

Point = tuple[int, float, int]


@dataclass(frozen=True)
class Counter:
    """The press counter: its points and the strokes counted since the previous point."""

    points: list[Point]
    increments: np.ndarray


def temp_points() -> list[Point]:
    """Every 7 min (plus whole-ms jitter) from half a day before the range to after it;
    every 9th point Bad, every 13th Uncertain, nothing during GAP."""
    rng = np.random.default_rng(29)
    ts = np.arange(START - 12 * HOUR, END + 3 * HOUR, 7 * MINUTE)
    ts = ts + rng.integers(0, 60_000, len(ts)) * MS
    values = np.round(rng.normal(180, 6, len(ts)), 3)
    out = []
    for i, (t, v) in enumerate(zip(ts.tolist(), values.tolist(), strict=True)):
        if GAP[0] <= t < GAP[1]:
            continue
        quality = Quality.BAD_SENSOR_FAILURE if i % 9 == 4 else Quality.GOOD
        quality = Quality.UNCERTAIN if i % 13 == 6 else quality
        out.append((t, v, int(quality)))
    return out


def counter() -> Counter:
    """Every 10 min, 0-24 strokes each; the value restarts from zero at RESET_AT, and one
    Bad point in the middle of 30 March reads 0 (its strokes show at the next good point)."""
    rng = np.random.default_rng(3)
    ts = np.arange(START - 6 * HOUR, END + 2 * HOUR, 10 * MINUTE) + rng.integers(0, 5, 1) * SEC
    increments = rng.integers(0, 25, len(ts)).astype(float)
    reset = int(np.searchsorted(ts, RESET_AT))
    values = np.concatenate([np.cumsum(increments[:reset]), np.cumsum(increments[reset:])])
    bad = int(np.searchsorted(ts, berlin(3, 30, 12)))
    quality = np.zeros(len(ts), dtype=np.int64)
    quality[bad] = Quality.BAD_COMMUNICATION_ERROR
    values[bad] = 0.0
    points = [(int(t), float(v), int(q)) for t, v, q in zip(ts, values, quality, strict=True)]
    return Counter(points, increments)


def all_points() -> dict[str, list[Point]]:
    return {TEMP: temp_points(), COUNTER: counter().points}


def batch() -> PointBatch:
    return PointBatch.from_points(
        (tag, t, v, q) for tag, points in all_points().items() for t, v, q in points
    )


@dataclass
class Api:
    client: httpx.AsyncClient

    async def get(self, url: str, **params: Any) -> Any:
        response = await self.client.get(url, params=params)
        assert response.status_code == 200, response.text
        return response.json()


@pytest.fixture
async def api(backend: Backend) -> AsyncIterator[Api]:
    """The points of :func:`all_points` ingested over HTTP into a server on ``backend``."""
    historian = backend.historian()
    await historian.start()
    try:
        async with Serving(historian) as client:
            answer = await client.post(
                "/api/v1/ingest",
                content=encode_arrow(batch(), edge="edge-q", seq=1),
                headers={"content-type": ARROW_MEDIA_TYPE},
            )
            assert answer.status_code == 200, answer.text  # answered after commit
            yield Api(client)
    finally:
        await historian.close()


class Serving:
    """uvicorn on 127.0.0.1 serving the API of ``historian``; an httpx client to it."""

    def __init__(self, historian: Historian) -> None:
        live: Channel[LiveBatch] = Channel("live", maxsize=64)
        app = create_app(
            historian=historian,
            ingestor=Ingestor(historian, live),
            live=live,
            version="0.0.0",
            clock=lambda: NOW,
        )
        self.headers = grant(app)
        self.server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="off")
        )

    async def __aenter__(self) -> httpx.AsyncClient:
        self.task = asyncio.create_task(self.server.serve(), name="uvicorn-test")
        async with asyncio.timeout(10):
            while not self.server.started:  # noqa: ASYNC110 - uvicorn offers no event
                await asyncio.sleep(0.01)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        self.client = httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{port}", timeout=60, headers=self.headers
        )
        return self.client

    async def __aexit__(self, *exc: object) -> None:
        await self.client.aclose()
        self.server.should_exit = True
        async with asyncio.timeout(10):
            await self.task


def approx(want: float | int | None) -> Any:
    return None if want is None else pytest.approx(want, rel=1e-9, abs=1e-9)


def ms(ns: int) -> int:
    return ns // MS


class QuerySuite:
    """The same assertions over each backend's ``backend`` fixture."""

    async def test_daily_buckets_follow_berlin_midnight_with_a_23_hour_dst_day(
        self, api: Api
    ) -> None:
        assert DAYS[3] - DAYS[2] == 23 * HOUR  # zoneinfo's own word: 29 March is short
        rows = await api.get(
            "/api/v1/history",
            tags=f"{TEMP},{COUNTER}",
            interval="1d",
            tz="Europe/Berlin",
            agg=",".join(AGGREGATES),
            time_format="ms",
            **{"from": str(ms(START)), "to": str(ms(END))},
        )
        want = {tag: reference_buckets(p, DAYS, START, END) for tag, p in all_points().items()}
        expected = [(ms(DAYS[d]), tag) for d in range(len(DAYS) - 1) for tag in (TEMP, COUNTER)]
        assert [(r["time"], r["path"]) for r in rows] == expected
        for row in rows:
            assert list(row) == ["time", "path", *AGGREGATES, "bad"]
            reference = want[row["path"]][[ms(d) for d in DAYS].index(row["time"])]
            assert {k: row[k] for k in AGGREGATES} == {k: approx(reference[k]) for k in AGGREGATES}
            assert row["bad"] == reference["bad"]

    async def test_counter_delta_counts_every_stroke_across_a_reset(self, api: Api) -> None:
        press = counter()
        ts = np.array([p[0] for p in press.points])
        rows = await api.get(
            "/api/v1/history",
            tags=COUNTER,
            interval="1d",
            tz="Europe/Berlin",
            agg="delta",
            time_format="ms",
            **{"from": str(ms(START)), "to": str(ms(END))},
        )
        # a day's strokes are the increments of its points; the Bad point's strokes show
        # at the next good point, in the same day
        strokes = [
            press.increments[(ts >= lo) & (ts < hi)].sum() for lo, hi in itertools.pairwise(DAYS)
        ]
        assert [r["time"] for r in rows] == [ms(d) for d in DAYS[:-1]]
        assert [r["delta"] for r in rows] == [approx(s) for s in strokes]
        reset_day = int(np.searchsorted(DAYS, RESET_AT, side="right")) - 1
        assert rows[reset_day]["delta"] > 0
        assert sum(r["delta"] for r in rows) == approx(
            press.increments[(ts >= START) & (ts < END)].sum()
        )

    @pytest.mark.parametrize(
        ("interval", "tz", "edges"),
        [
            # ISO weeks from Monday local midnight: the first begins before `from`
            ("1w", "Europe/Berlin", [berlin(3, 23), berlin(3, 30), berlin(4, 6)]),
            ("1M", "Europe/Berlin", [berlin(3, 1), berlin(4, 1)]),  # Grafana's month
            ("1d", "utc", list(range(berlin(3, 26, 1), END + 24 * HOUR, 24 * HOUR))),  # UTC days
        ],
    )
    async def test_calendar_buckets_match_the_reference(
        self, api: Api, interval: str, tz: str, edges: list[int]
    ) -> None:
        rows = await api.get(
            "/api/v1/history",
            tags=COUNTER,
            interval=interval,
            tz=tz,
            agg="delta,twa,count",
            fill="null",
            time_format="ms",
            **{"from": str(ms(START)), "to": str(ms(END))},
        )
        want = reference_buckets(all_points()[COUNTER], edges, START, END)
        assert [r["time"] for r in rows] == [ms(e) for e in edges[:-1]]
        for row, w in zip(rows, want, strict=True):
            assert (row["delta"], row["twa"], row["count"], row["bad"]) == (
                approx(w["delta"]),
                approx(w["twa"]),
                w["count"],
                w["bad"],
            )

    async def test_empty_buckets_are_left_out_unless_fill_null(self, api: Api) -> None:
        lo, hi = berlin(3, 29), berlin(3, 31)
        params = {"tags": TEMP, "interval": "1h", "tz": "Europe/Berlin", "agg": "avg,count"}
        params |= {"from": str(ms(lo)), "to": str(ms(hi)), "time_format": "ms"}
        edges = list(range(lo, hi + 1, HOUR))  # Berlin's hours are UTC's (offsets are whole)
        reference = reference_buckets(all_points()[TEMP], edges, lo, hi)
        full = await api.get("/api/v1/history", **params, fill="null")
        assert [r["time"] for r in full] == [ms(e) for e in edges[:-1]]
        assert len(full) == 23 + 24  # the short day has 23 hourly buckets
        sparse = await api.get("/api/v1/history", **params)
        shown = [ms(e) for e, r in zip(edges, reference, strict=False) if r["count"] or r["bad"]]
        assert [r["time"] for r in sparse] == shown
        assert len(shown) < len(full)  # the gap's hours are left out
        for row in full:
            want = reference[edges.index(row["time"] * MS)]
            assert (row["avg"], row["count"], row["bad"]) == (
                approx(want["avg"]),
                want["count"],
                want["bad"],
            )

    async def test_wide_shape_names_bad_columns_only_when_asked(self, api: Api) -> None:
        params = {"tags": f"{TEMP},{COUNTER}", "interval": "1d", "tz": "Europe/Berlin"}
        params |= {"from": str(ms(START)), "to": str(ms(END)), "shape": "wide"}
        plain = await api.get("/api/v1/history", **params, agg="twa")
        assert list(plain[0]) == ["time", TEMP, COUNTER]
        with_bad = await api.get("/api/v1/history", **params, agg="twa,bad")
        assert list(with_bad[0]) == [
            "time",
            f"{TEMP}:twa",
            f"{TEMP}:bad",
            f"{COUNTER}:twa",
            f"{COUNTER}:bad",
        ]
        want = reference_buckets(all_points()[TEMP], DAYS, START, END)
        assert [r[f"{TEMP}:bad"] for r in with_bad] == [w["bad"] for w in want]
        assert [r[TEMP] for r in plain] == [approx(w["twa"]) for w in want]

    async def test_series_takes_new_aggregates_and_a_time_zone(self, api: Api) -> None:
        body = await api.get(
            f"/api/v1/tags/{TEMP}/series",
            start="2026-03-27T00:00:00+01:00",
            end="2026-04-01T00:00:00+02:00",
            bucket="1d",
            tz="Europe/Berlin",
            agg="twa,stddev,sum,delta,bad",
        )
        want = reference_buckets(all_points()[TEMP], DAYS, START, END)
        columns = body["columns"]
        assert list(columns) == ["ts", "twa", "stddev", "sum", "delta", "bad"]
        stamps = np.array([c.removesuffix("Z") for c in columns["ts"]], dtype="datetime64[ns]")
        assert stamps.view(np.int64).tolist() == DAYS[:-1]
        for name in ("twa", "stddev", "sum", "delta"):
            assert columns[name] == [approx(w[name]) for w in want]
        assert columns["bad"] == [w["bad"] for w in want]

    async def test_values_at_previous_and_linear_match_the_reference(self, api: Api) -> None:
        temp = all_points()[TEMP]
        good_point = next(t for t, _, q in temp if q == Quality.GOOD and t > START)
        times = [
            START - 13 * HOUR,  # before the first point: null
            good_point,  # exactly at a point
            berlin(3, 30, 6),  # in the gap
            berlin(3, 29, 1, 30),  # 01:30 CET, just before the clocks jump
            END + 10 * HOUR,  # after the last point: linear has none
        ]
        texts = [
            "2026-03-26T11:00:00+01:00",  # ISO with an offset: the same instant as times[0]
            str(ms(good_point)),  # epoch milliseconds
            "2026-03-30T04:00:00Z",
            str(ms(times[3])),
            "now-14h",  # NOW - 14 h = END + 10 h
        ]
        assert int(datetime.fromisoformat(texts[0]).timestamp()) * SEC == times[0]
        for method in ("previous", "linear"):
            rows = await api.get(
                "/api/v1/values/at",
                tags=f"{TEMP},{COUNTER}",
                at=",".join(texts),
                method=method,
                time_format="ms",
            )
            want = {tag: reference_at(p, times, method) for tag, p in all_points().items()}
            expected = [  # sorted by time, then by the order of tags
                {"time": ms(t), "path": tag, "value": approx(want[tag][i])}
                for i, t in sorted(enumerate(times), key=lambda it: it[1])
                for tag in (TEMP, COUNTER)
            ]
            assert rows == expected
            assert rows[0]["value"] is None
        assert want[TEMP][-1] is None  # linear, after the last point

    async def test_values_at_wide_and_arrow(self, api: Api) -> None:
        times = [berlin(3, 28, 6), berlin(3, 28, 14), berlin(3, 28, 22)]  # shift changes
        params = {"tags": f"{COUNTER},{TEMP}", "at": [str(ms(t)) for t in times]}
        wide = await api.get("/api/v1/values/at", **params, shape="wide", time_format="ms")
        want = {tag: reference_at(p, times, "previous") for tag, p in all_points().items()}
        assert wide == [
            {"time": ms(t), COUNTER: approx(want[COUNTER][i]), TEMP: approx(want[TEMP][i])}
            for i, t in enumerate(times)
        ]
        response = await api.client.get(
            "/api/v1/values/at", params=params, headers={"accept": ARROW_MEDIA_TYPE}
        )
        assert response.headers["content-type"] == ARROW_MEDIA_TYPE
        table = pa.ipc.open_stream(response.content).read_all()
        assert table.column_names == ["ts", "path", "value"]
        assert table.column("ts").type == pa.timestamp("ns", tz="UTC")
        assert table.column("path").to_pylist() == [COUNTER, TEMP] * 3


class TestDuckDB(QuerySuite):
    @pytest.fixture
    def backend(self, tmp_path: Path) -> Backend:
        return Backend("duckdb", path=tmp_path / "data" / "history.duckdb")


class TestPostgres(QuerySuite):
    @pytest.fixture
    def backend(self, postgres_server: PostgresServer) -> Iterator[Backend]:
        dsn = postgres_server.create_database()
        yield Backend("postgres", dsn=dsn)
        postgres_server.drop_database(dsn.rsplit("dbname=", 1)[1])


# --------------------------------------------------------------------------- errors (DuckDB)
@pytest.fixture
async def platform(make_platform: MakePlatform) -> Platform:
    platform = await make_platform(clock=lambda: NOW)
    body = encode_arrow(batch(), edge="edge-e", seq=1)
    answer = await platform.client.post(
        "/api/v1/ingest", content=body, headers={"content-type": ARROW_MEDIA_TYPE}
    )
    assert answer.status_code == 200, answer.text
    return platform


SERIES = f"/api/v1/tags/{TEMP}/series"
RANGE = {"start": "2026-03-27T00:00:00Z", "end": "2026-03-28T00:00:00Z"}


@pytest.mark.parametrize(
    ("url", "params", "status", "field"),
    [
        (SERIES, {**RANGE, "bucket": "1d", "tz": "Mars/Olympus_Mons"}, 422, "tz"),
        (SERIES, {**RANGE, "tz": "Europe/Berlin"}, 422, "tz"),  # raw points have no buckets
        (SERIES, {**RANGE, "bucket": "1q"}, 422, "bucket"),
        (SERIES, {**RANGE, "bucket": "1d", "agg": "delta,median"}, 422, "agg"),
        (SERIES, {"start": "1800-01-01", "bucket": "1mo", "tz": "Europe/Berlin"}, 422, "start"),
        ("/api/v1/values/at", {"tags": TEMP}, 422, "at"),
        ("/api/v1/values/at", {"tags": TEMP, "at": ","}, 422, "at"),
        ("/api/v1/values/at", {"tags": TEMP, "at": "yesterday"}, 422, "at"),
        ("/api/v1/values/at", {"tags": TEMP, "at": "now", "method": "cubic"}, 422, "method"),
        ("/api/v1/values/at", {"at": "now"}, 422, "tags"),
        ("/api/v1/values/at", {"tags": f"{TEMP},acme/p1/nope", "at": "now"}, 404, "tags"),
    ],
)
async def test_malformed_parameters_are_named(
    platform: Platform, url: str, params: dict[str, str], status: int, field: str
) -> None:
    response = await platform.client.get(url, params=params)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["field"] == field
    assert error["message"]


async def test_too_many_rows_names_the_interval(platform: Platform) -> None:
    # 21 tags x 100,000 one-second buckets: over the historian's 2,000,000 rows per answer
    tags = [f"acme/p2/cell/m{i}/temp" for i in range(21)]
    body = encode_arrow(
        PointBatch.from_points((t, START, 1.0, 0) for t in tags), edge="edge-e", seq=2
    )
    answer = await platform.client.post(
        "/api/v1/ingest", content=body, headers={"content-type": ARROW_MEDIA_TYPE}
    )
    assert answer.status_code == 200, answer.text
    params = {"tags": ",".join(tags), "interval_ms": "1000"}
    params |= {"from": str(ms(START)), "to": str(ms(START + 100_000 * SEC))}
    response = await platform.client.get("/api/v1/history", params=params)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["field"] == "interval_ms"
    assert "2000000" in error["message"]


async def test_too_many_points_names_the_range(
    platform: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The historian refuses a query over more than query.MAX_POINTS points (20 million);
    # lowered here so that a few hundred points are too many.
    monkeypatch.setattr(query, "MAX_POINTS", 100)
    day = {"from": str(ms(DAYS[0])), "to": str(ms(DAYS[1]))}
    asks = [
        ("/api/v1/history", {"tags": TEMP, "interval": "1h", **day}, "to"),
        (SERIES, {**RANGE, "bucket": "1h"}, "end"),
        ("/api/v1/values/at", {"tags": TEMP, "at": f"{day['from']},{day['to']}"}, "at"),
    ]
    for url, params, field in asks:
        response = await platform.client.get(url, params=params)
        assert response.status_code == 422, response.text
        error = response.json()["error"]
        assert (error["field"], "points" in error["message"]) == (field, True)
