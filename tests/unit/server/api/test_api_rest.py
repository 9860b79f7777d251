"""The REST API over a real in-memory DuckDB historian, data written through the ingestor."""

from __future__ import annotations

import json
import logging
import math
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import httpx
import numpy as np
import pyarrow as pa
import pytest
from fastapi import APIRouter

from shopfloor.errors import UnknownTagError
from shopfloor.model import PointBatch, Quality, TagMeta
from shopfloor.model.tags import DataType
from shopfloor.server.api.schemas import ErrorEnvelope, HealthOut, LatestOut, SeriesOut, TagsOut
from shopfloor.wire import ARROW_MEDIA_TYPE, encode_arrow, encode_json

if TYPE_CHECKING:
    from conftest import MakeStack, Stack

T0 = datetime(2025, 1, 1, tzinfo=UTC)
SEC = 1_000_000_000


def ns(moment: datetime) -> int:
    return (moment - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1) * 1000


def iso(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def assert_error(response: httpx.Response, status: int, field: str | None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    ErrorEnvelope.model_validate(body)
    assert body["error"]["field"] == field, body
    assert body["error"]["message"]
    return dict(body["error"])


SERIES = "/api/v1/tags/acme/p1/machining/cnc-1/temp/series"
TEMP = "acme/p1/machining/cnc-1/temp"


async def seed_minutes(stack: Stack) -> tuple[np.ndarray, np.ndarray]:
    """Three minutes of one point per second on TEMP; returns (ts_ns, values)."""
    ts = ns(T0) + np.arange(180, dtype=np.int64) * SEC
    values = np.sin(np.arange(180) / 7.0) * 10 + 20
    await stack.ingest(PointBatch.from_columns([TEMP], np.zeros(180), ts, values))
    return ts, values


# ----------------------------------------------------------------------------- health
async def test_healthz_reports_version_counters_and_status(make_stack: MakeStack) -> None:
    stack = await make_stack(status=lambda: {"uptime_s": 12.5, "edges": ["edge-1"]})
    await stack.ingest(PointBatch.from_points([("a/b", ns(T0), 1.0, 0), ("a/b", ns(T0) + 1, 2, 0)]))
    response = await stack.client.get("/healthz")
    assert response.status_code == 200
    body = response.json()
    HealthOut.model_validate(body)
    assert body["status"] == "ok"
    assert body["version"] == "9.9.9"
    assert body["ingest"]["points_accepted"] == 2
    assert body["ingest"]["batches"] == 1
    assert body["historian"]["points_written"] == 2
    assert body["uptime_s"] == 12.5
    assert body["edges"] == ["edge-1"]


# ----------------------------------------------------------------------------- tags
async def test_tags_sorted_with_metadata_and_prefix(stack: Stack) -> None:
    await stack.historian.register_tags(
        [
            TagMeta(
                "acme/p1/machining/cnc-1/state",
                unit="",
                description="machine state",
                data_type=DataType.INT,
                states=((1, "RUNNING"), (2, "IDLE")),
            ),
            TagMeta(TEMP, unit="degC", eng_low=0.0, eng_high=120.0),
        ]
    )
    t = ns(T0)
    await stack.ingest(
        PointBatch.from_points(
            [
                ("acme/p1/machining2/x", t, 1, 0),
                ("acme/p2/y", t, 1, 0),
                ("acme/p1/machining/cnc-1/state", t, 1, 0),
            ]
        )
    )
    everything = TagsOut.model_validate((await stack.client.get("/api/v1/tags")).json())
    paths = [t.path for t in everything.tags]
    assert paths == sorted(paths)
    assert set(paths) == {
        "acme/p1/machining/cnc-1/state",
        TEMP,
        "acme/p1/machining2/x",
        "acme/p2/y",
    }
    response = await stack.client.get("/api/v1/tags", params={"prefix": "acme/p1/machining"})
    tags = response.json()["tags"]
    # Whole segments: machining2 is not under machining.
    assert [t["path"] for t in tags] == ["acme/p1/machining/cnc-1/state", TEMP]
    state, temp = tags
    assert state["states"] == {"1": "RUNNING", "2": "IDLE"}
    assert state["name"] == "state"
    assert state["asset"] == "acme/p1/machining/cnc-1"
    assert state["data_type"] == "int"
    assert state["description"] == "machine state"
    assert (temp["unit"], temp["eng_low"], temp["eng_high"]) == ("degC", 0.0, 120.0)


async def test_bad_prefix_is_named(stack: Stack) -> None:
    assert_error(await stack.client.get("/api/v1/tags", params={"prefix": "a//b"}), 422, "prefix")


# ----------------------------------------------------------------------------- series raw
async def test_raw_series_columns(stack: Stack) -> None:
    t = ns(T0)
    await stack.ingest(
        PointBatch.from_points(
            [
                (TEMP, t, 20.5, 0),
                (TEMP, t + 1500 * 1_000_000, math.nan, int(Quality.BAD_SENSOR_FAILURE)),
                (TEMP, t + 3 * SEC, "JAM", 0),
                (TEMP, t + 10 * SEC, 99.0, 0),  # outside [start, end)
            ]
        )
    )
    response = await stack.client.get(
        SERIES, params={"start": iso(T0), "end": iso(T0 + timedelta(seconds=10))}
    )
    assert response.status_code == 200, response.text
    body = response.json()
    SeriesOut.model_validate(body)
    assert body["path"] == TEMP
    assert body["bucket"] is None
    assert body["truncated"] is False
    assert body["start"] == "2025-01-01T00:00:00.000Z"
    assert body["end"] == "2025-01-01T00:00:10.000Z"
    assert body["columns"] == {
        "ts": [
            "2025-01-01T00:00:00.000Z",
            "2025-01-01T00:00:01.500Z",
            "2025-01-01T00:00:03.000Z",
        ],
        "value": [20.5, None, None],
        "quality": [0, 0x808C0000, 0],  # BadSensorFailure
        "text": [None, None, "JAM"],
    }


async def test_naive_and_offset_times_mean_the_same_instant(stack: Stack) -> None:
    await seed_minutes(stack)
    answers = []
    for start, end in [
        ("2025-01-01T00:00:10Z", "2025-01-01T00:00:20Z"),
        ("2025-01-01T00:00:10", "2025-01-01 00:00:20"),
        ("2025-01-01T01:00:10+01:00", "2024-12-31T23:00:20-01:00"),
    ]:
        response = await stack.client.get(SERIES, params={"start": start, "end": end})
        assert response.status_code == 200, response.text
        answers.append(response.json()["columns"]["ts"])
    assert answers[0] == [iso(T0 + timedelta(seconds=s)) for s in range(10, 20)]
    assert answers[1] == answers[0]
    assert answers[2] == answers[0]


async def test_default_range_is_the_last_hour(stack: Stack) -> None:
    now = datetime.now(UTC)
    await stack.ingest(
        PointBatch.from_points(
            [
                (TEMP, ns(now - timedelta(minutes=90)), 1.0, 0),
                (TEMP, ns(now - timedelta(minutes=10)), 2.0, 0),
                (TEMP, ns(now - timedelta(minutes=2)), 3.0, 0),
            ]
        )
    )
    assert (await stack.client.get(SERIES)).json()["columns"]["value"] == [2.0, 3.0]
    relative = await stack.client.get(SERIES, params={"start": "-5m", "end": "now"})
    assert relative.json()["columns"]["value"] == [3.0]
    relative = await stack.client.get(SERIES, params={"start": "now-2h", "end": "-1h"})
    assert relative.json()["columns"]["value"] == [1.0]


async def test_limit_truncates_oldest_first(stack: Stack) -> None:
    await seed_minutes(stack)
    body = (
        await stack.client.get(
            SERIES, params={"start": iso(T0), "end": iso(T0 + timedelta(hours=1)), "limit": 3}
        )
    ).json()
    assert body["truncated"] is True
    assert body["columns"]["ts"] == [iso(T0 + timedelta(seconds=s)) for s in range(3)]


# ----------------------------------------------------------------------------- series buckets
async def test_bucketed_series_matches_numpy(stack: Stack) -> None:
    _, values = await seed_minutes(stack)
    response = await stack.client.get(
        SERIES,
        params={
            "start": iso(T0),
            "end": iso(T0 + timedelta(minutes=3)),
            "bucket": "1m",
            "agg": "avg,max,min,count,first,last",
        },
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["bucket"] == "1m"
    columns = body["columns"]
    assert columns["ts"] == [iso(T0 + timedelta(minutes=m)) for m in range(3)]
    per_minute = values.reshape(3, 60)
    np.testing.assert_allclose(columns["avg"], per_minute.mean(axis=1))
    np.testing.assert_allclose(columns["max"], per_minute.max(axis=1))
    np.testing.assert_allclose(columns["min"], per_minute.min(axis=1))
    np.testing.assert_allclose(columns["first"], per_minute[:, 0])
    np.testing.assert_allclose(columns["last"], per_minute[:, -1])
    assert columns["count"] == [60, 60, 60]
    assert list(columns) == ["ts", "avg", "max", "min", "count", "first", "last"]


async def test_bucket_defaults_to_avg_and_takes_milliseconds(stack: Stack) -> None:
    _, values = await seed_minutes(stack)
    body = (
        await stack.client.get(
            SERIES,
            params={"start": iso(T0), "end": iso(T0 + timedelta(seconds=4)), "bucket": "2000ms"},
        )
    ).json()
    assert list(body["columns"]) == ["ts", "avg"]
    np.testing.assert_allclose(body["columns"]["avg"], values[:4].reshape(2, 2).mean(axis=1))


async def test_series_as_arrow(stack: Stack) -> None:
    ts, values = await seed_minutes(stack)
    response = await stack.client.get(
        SERIES,
        params={"start": iso(T0), "end": iso(T0 + timedelta(minutes=5))},
        headers={"Accept": ARROW_MEDIA_TYPE},
    )
    assert response.status_code == 200
    assert response.headers["content-type"] == ARROW_MEDIA_TYPE
    table = pa.ipc.open_stream(response.content).read_all()
    np.testing.assert_array_equal(table.column("ts").cast(pa.int64()).to_numpy(), ts)
    np.testing.assert_allclose(table.column("value").to_numpy(), values)
    assert table.schema.metadata[b"path"] == TEMP.encode()


# ----------------------------------------------------------------------------- series errors
@pytest.mark.parametrize(
    ("params", "field", "fragment"),
    [
        ({"bucket": "5x"}, "bucket", "bucket must look like 30s, 1m, 1h or 1d, got '5x'"),
        ({"bucket": "0s"}, "bucket", "'0s'"),
        ({"start": "2025-01-02T00:00:00Z", "end": "2025-01-01T00:00:00Z"}, "start", "before"),
        ({"start": "2025-01-01T00:00:00Z", "end": "2025-01-01T00:00:00Z"}, "start", "before"),
        ({"start": "-30d", "bucket": "1s"}, "bucket", "100000"),
        ({"start": "yesterday"}, "start", "ISO 8601"),
        ({"end": "2025-13-01"}, "end", "ISO 8601"),
        ({"bucket": "1m", "agg": "avg,mean"}, "agg", "'mean'"),
        ({"agg": "avg"}, "agg", "bucket"),
        ({"limit": "abc"}, "limit", ""),
        ({"limit": "0"}, "limit", ""),
    ],
)
async def test_series_errors_name_the_parameter(
    stack: Stack, params: dict[str, str], field: str, fragment: str
) -> None:
    await stack.ingest(PointBatch.from_points([(TEMP, ns(T0), 1.0, 0)]))
    error = assert_error(await stack.client.get(SERIES, params=params), 422, field)
    assert error["code"] == "invalid_parameter"
    assert fragment in error["message"]


async def test_unknown_tag_is_404_naming_path(stack: Stack) -> None:
    error = assert_error(await stack.client.get("/api/v1/tags/no/such/tag/series"), 404, "path")
    assert error["code"] == "not_found"
    assert "no/such/tag" in error["message"]


async def test_unknown_route_and_method_use_the_envelope(stack: Stack) -> None:
    assert assert_error(await stack.client.get("/api/v1/nope"), 404, None)["code"] == "not_found"
    error = assert_error(await stack.client.delete("/api/v1/tags"), 405, None)
    assert error["code"] == "method_not_allowed"


# ----------------------------------------------------------------------------- latest
async def test_latest_values_with_prefix(stack: Stack) -> None:
    t = ns(T0)
    await stack.ingest(
        PointBatch.from_points(
            [
                ("acme/p1/a", t, 1.0, 0),
                ("acme/p1/a", t + SEC, 2.0, 0),
                ("acme/p1/b", t, "IDLE", 0),
                ("acme/p2/c", t + 2 * SEC, math.nan, int(Quality.BAD)),
            ]
        )
    )
    body = (await stack.client.get("/api/v1/values/latest")).json()
    LatestOut.model_validate(body)
    assert body["values"] == [
        {
            "path": "acme/p1/a",
            "ts": iso(T0 + timedelta(seconds=1)),
            "value": 2.0,
            "quality": 0,
            "text": None,
        },
        {"path": "acme/p1/b", "ts": iso(T0), "value": None, "quality": 0, "text": "IDLE"},
        {
            "path": "acme/p2/c",
            "ts": iso(T0 + timedelta(seconds=2)),
            "value": None,
            "quality": 0x80000000,
            "text": None,
        },
    ]
    narrowed = await stack.client.get("/api/v1/values/latest", params={"prefix": "acme/p2/"})
    assert [v["path"] for v in narrowed.json()["values"]] == ["acme/p2/c"]


# ----------------------------------------------------------------------------- ingest
POINTS = [
    ("acme/p1/a", ns(T0), 1.5, 0),
    ("acme/p1/b", ns(T0) + SEC, "RUNNING", 0),
    ("acme/p1/a", ns(T0) + 2 * SEC, math.nan, int(Quality.BAD_NOT_CONNECTED)),
    ("acme/p1/b", ns(T0) + 3 * SEC, True, 0),
]


def _bodies() -> dict[str, tuple[bytes, str]]:
    batch = PointBatch.from_points(POINTS)
    rows = {
        "points": [
            {
                "tag": "acme/p1/a",
                "ts": "2025-01-01T00:00:00Z",
                "value": 1.5,
            },
            {"tag": "acme/p1/b", "ts": "2025-01-01T00:00:01Z", "value": "RUNNING", "quality": 0},
            {"tag": "acme/p1/a", "ts": ns(T0) + 2 * SEC, "value": None, "quality": 0x808A0000},
            {"tag": "acme/p1/b", "ts": "2025-01-01T01:00:03+01:00", "value": True},
        ],
        "edge": "script",
    }
    return {
        "columnar": (encode_json(batch, edge="edge-1", seq=7), "application/json"),
        "rows": (json.dumps(rows).encode(), "application/json; charset=utf-8"),
        "arrow": (encode_arrow(batch, edge="edge-1", seq=7), ARROW_MEDIA_TYPE),
    }


async def _stored(stack: Stack) -> list[tuple[Any, ...]]:
    await stack.historian.flush()
    out = []
    for path in ("acme/p1/a", "acme/p1/b"):
        try:
            table = await stack.historian.read_raw(path, 0, ns(T0) + 3600 * SEC)
        except UnknownTagError:
            continue
        for t, v, q, x in zip(
            table.column("ts").cast(pa.int64()).to_pylist(),
            table.column("value").to_pylist(),
            table.column("quality").to_pylist(),
            table.column("text").to_pylist(),
            strict=True,
        ):
            out.append((path, t, "nan" if math.isnan(v) else v, q, x))
    return out


async def test_all_encodings_store_the_same_points(make_stack: MakeStack) -> None:
    stored = {}
    for form, (body, content_type) in _bodies().items():
        stack = await make_stack()
        response = await stack.client.post(
            "/api/v1/ingest", content=body, headers={"content-type": content_type}
        )
        assert response.status_code == 200, (form, response.text)
        answer = response.json()
        assert answer["accepted"] == 4
        assert (answer["edge"], answer["seq"]) == (
            ("script", None) if form == "rows" else ("edge-1", 7)
        )
        stored[form] = await _stored(stack)
    expected = [
        ("acme/p1/a", ns(T0), 1.5, 0, None),
        ("acme/p1/a", ns(T0) + 2 * SEC, "nan", 0x808A0000, None),
        ("acme/p1/b", ns(T0) + SEC, "nan", 0, "RUNNING"),
        ("acme/p1/b", ns(T0) + 3 * SEC, 1.0, 0, None),
    ]
    assert stored == {"columnar": expected, "rows": expected, "arrow": expected}


async def test_malformed_payload_names_field_and_stores_nothing(stack: Stack) -> None:
    doc = {
        "tags": ["acme/p1/a"],
        "ts": [ns(T0), ns(T0) + 1, ns(T0) + 2, "not a time"],
        "value": [1, 2, 3, 4],
    }
    response = await stack.client.post("/api/v1/ingest", json=doc)
    assert assert_error(response, 422, "ts[3]")["code"] == "invalid_payload"
    response = await stack.client.post(
        "/api/v1/ingest",
        json={
            "points": [{"tag": "acme/p1/a", "ts": ns(T0), "value": 1}] * 7
            + [{"tag": "acme/p1/a", "ts": ns(T0), "value": {"x": 1}}]
        },
    )
    assert_error(response, 422, "points[7].value")
    # Valid wire format, but a clock that was never set: refused whole by the ingestor.
    old = {"tags": ["acme/p1/a"], "ts": [ns(T0), "1999-12-31T23:59:59Z"], "value": [1, 2]}
    error = assert_error(await stack.client.post("/api/v1/ingest", json=old), 422, "ts")
    assert "1 of 2" in error["message"]
    assert await _stored(stack) == []
    assert (await stack.client.get("/api/v1/tags")).json()["tags"] == []
    health = (await stack.client.get("/healthz")).json()
    assert health["ingest"]["batches_rejected"] == 1  # decode errors never reach the ingestor
    assert health["ingest"]["points_accepted"] == 0


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b"\x00\xff garbage {", "application/json"),
        (b"\x00\xff garbage {", ARROW_MEDIA_TYPE),
        (b"[1, 2, 3]", "application/json"),
        (b"", "application/json"),
    ],
)
async def test_garbage_is_400_and_server_keeps_answering(
    stack: Stack, body: bytes, content_type: str
) -> None:
    response = await stack.client.post(
        "/api/v1/ingest", content=body, headers={"content-type": content_type}
    )
    assert assert_error(response, 400, "body")["code"] == "malformed_body"
    assert (await stack.client.get("/healthz")).status_code == 200


async def test_unsupported_content_type_is_415(stack: Stack) -> None:
    response = await stack.client.post(
        "/api/v1/ingest", content=b"a,b\n1,2\n", headers={"content-type": "text/csv"}
    )
    assert assert_error(response, 415, "content-type")["code"] == "unsupported_media_type"
    response = await stack.client.post("/api/v1/ingest", content=b"{}")  # no content type
    assert_error(response, 415, "content-type")


async def test_oversize_body_is_413_and_nothing_stored(make_stack: MakeStack) -> None:
    stack = await make_stack(max_body_bytes=2000)
    batch = PointBatch.from_columns(
        ["acme/p1/a"], np.zeros(200), ns(T0) + np.arange(200) * SEC, np.arange(200.0)
    )
    body = encode_json(batch, edge="e", seq=1)
    assert len(body) > 2000
    declared = await stack.client.post(
        "/api/v1/ingest", content=body, headers={"content-type": "application/json"}
    )
    assert assert_error(declared, 413, "body")["code"] == "payload_too_large"
    seen = 0

    async def chunks() -> Any:  # no Content-Length: the limit is enforced while reading
        nonlocal seen
        for i in range(0, len(body), 500):
            seen += 1
            yield body[i : i + 500]

    streamed = await stack.client.post(
        "/api/v1/ingest", content=chunks(), headers={"content-type": "application/json"}
    )
    assert_error(streamed, 413, "body")
    assert await _stored(stack) == []
    small = encode_json(PointBatch.from_points(POINTS[:1]), edge="e", seq=2)
    ok = await stack.client.post(
        "/api/v1/ingest", content=small, headers={"content-type": "application/json"}
    )
    assert ok.status_code == 200


# ----------------------------------------------------------------------------- robustness
class _BrokenTags:
    """A historian whose tag listing fails with a bug, to see the 500 envelope."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def tags(self) -> list[TagMeta]:
        raise ZeroDivisionError("a bug")


async def test_unexpected_error_is_500_envelope_and_logged(
    stack: Stack, caplog: pytest.LogCaptureFixture
) -> None:
    ctx = stack.app.state.shopfloor
    stack.app.state.shopfloor = type(ctx)(
        **{
            **{f: getattr(ctx, f) for f in ctx.__dataclass_fields__},
            "historian": _BrokenTags(ctx.historian),
        }
    )
    with caplog.at_level(logging.ERROR):
        response = await stack.client.get("/api/v1/tags")
    assert assert_error(response, 500, None)["code"] == "internal_error"
    assert "ZeroDivisionError" in caplog.text
    assert (await stack.client.get("/healthz")).status_code == 200


async def test_openapi_documents_the_api(stack: Stack) -> None:
    spec = (await stack.client.get("/openapi.json")).json()
    paths = spec["paths"]
    series = paths["/api/v1/tags/{path}/series"]["get"]
    assert series["summary"]
    assert series["tags"] == ["tags"]
    assert "ErrorEnvelope" in json.dumps(series["responses"]["422"])
    assert "SeriesOut" in json.dumps(series["responses"]["200"])
    assert {"/healthz", "/api/v1/tags", "/api/v1/values/latest", "/api/v1/ingest"} <= set(paths)
    ingest = paths["/api/v1/ingest"]["post"]
    assert set(ingest["requestBody"]["content"]) == {"application/json", ARROW_MEDIA_TYPE}


async def test_every_operation_declares_the_errors_any_body_or_parameter_can_get(
    stack: Stack,
) -> None:
    # a client generated from the document must know the 400 (unparseable body), 413 (body
    # over the limit) and 422 (invalid input) the framework answers on any route
    spec = (await stack.client.get("/openapi.json")).json()
    envelope = {"$ref": "#/components/schemas/ErrorEnvelope"}
    with_body = 0
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            responses = operation["responses"]
            wanted = {"400", "413", "422"} if "requestBody" in operation else set()
            if operation.get("parameters"):
                wanted.add("422")
            with_body += "requestBody" in operation
            for status in wanted:
                declared = responses.get(status, {}).get("content", {})
                assert declared["application/json"]["schema"] == envelope, (method, path, status)
    assert with_body >= 10
    # FastAPI's own 422 shape ({"detail": [...]}) is never answered: it is not documented
    assert "HTTPValidationError" not in json.dumps(spec)
    health = spec["paths"]["/healthz"]["get"]["responses"]
    assert set(health) == {"200"}, "an operation without input gets no input errors"
    ingest = spec["paths"]["/api/v1/ingest"]["post"]["responses"]
    assert "size limit" in ingest["413"]["description"], "a route's own declaration wins"


async def test_every_operation_that_uses_a_store_declares_its_503(stack: Stack) -> None:
    # the shared PostgreSQL restarting is answered 503 (tests/integration/server/
    # test_store_outages.py): a client generated from the document must expect it
    spec = (await stack.client.get("/openapi.json")).json()
    envelope = {"$ref": "#/components/schemas/ErrorEnvelope"}
    guarded = 0
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            responses = operation["responses"]
            if "401" not in responses and path != "/api/v1/auth/login":
                continue  # public and storeless: /healthz
            guarded += 1
            declared = responses.get("503", {}).get("content", {})
            assert declared["application/json"]["schema"] == envelope, (method, path)
    assert guarded >= 50
    store = spec["paths"]["/api/v1/tags/{path}/series"]["get"]["responses"]["503"]
    assert "Retry-After" in store["description"]
    assert "503" not in spec["paths"]["/healthz"]["get"]["responses"]


async def test_extra_routers_are_mounted(make_stack: MakeStack) -> None:
    web = APIRouter()

    @web.get("/hello")
    async def hello() -> dict[str, str]:
        return {"hello": "web"}

    stack = await make_stack(extra_routers=[web])
    assert (await stack.client.get("/hello")).json() == {"hello": "web"}


async def test_large_series_is_complete(stack: Stack) -> None:
    n = 30_000  # above the size that is serialised in a worker thread
    ts = ns(T0) + np.arange(n, dtype=np.int64) * 1_000_000
    values = np.arange(n) * 0.5
    await stack.ingest(PointBatch.from_columns([TEMP], np.zeros(n), ts, values))
    body = (
        await stack.client.get(
            SERIES, params={"start": iso(T0), "end": iso(T0 + timedelta(minutes=1))}
        )
    ).json()
    assert body["columns"]["value"] == values.tolist()
    assert len(body["columns"]["ts"]) == n
    assert body["columns"]["ts"][-1] == iso(T0 + timedelta(milliseconds=n - 1))


async def test_ingest_while_shutting_down_is_503(stack: Stack) -> None:
    await stack.historian.close()
    body = encode_json(PointBatch.from_points(POINTS), edge="e", seq=1)
    response = await stack.client.post(
        "/api/v1/ingest", content=body, headers={"content-type": "application/json"}
    )
    assert assert_error(response, 503, None)["code"] == "unavailable"


async def test_every_other_body_has_a_small_limit(make_server: Any) -> None:
    """An operator or engineering route is not made to buffer megabytes: a body over
    ``max_request_bytes`` is 413 whether it declares its length or streams it, through a
    real HTTP server that keeps serving; edge routes keep the ingest limit."""
    server = await make_server(max_request_bytes=4096, max_body_bytes=200_000)
    big = json.dumps({"user": "ann", "comment": "x" * 10_000}).encode()
    base = f"http://127.0.0.1:{server.port}"
    async with httpx.AsyncClient(base_url=base, headers=server.headers) as client:
        declared = await client.post(
            "/api/v1/alarms/a/acknowledge",
            content=big,
            headers={"content-type": "application/json"},
        )
        assert assert_error(declared, 413, "body")["code"] == "payload_too_large"

        async def chunks() -> Any:
            for i in range(0, len(big), 1000):
                yield big[i : i + 1000]

        streamed = await client.put(
            "/api/v1/assets/equipment/press-1",
            content=chunks(),
            headers={"content-type": "application/json"},
        )
        assert_error(streamed, 413, "body")
        batch = PointBatch.from_columns(
            ["acme/p1/a"], np.zeros(400), ns(T0) + np.arange(400) * SEC, np.arange(400.0)
        )
        body = encode_json(batch, edge="e", seq=1)
        assert 4096 < len(body) < 200_000
        stored = await client.post(
            "/api/v1/ingest", content=body, headers={"content-type": "application/json"}
        )
        assert stored.status_code == 200, stored.text
        assert (await client.get("/healthz")).status_code == 200
