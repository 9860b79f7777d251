"""GET /api/v1/storage and the retention counters of /healthz over real HTTP (DuckDB).

Expected points, oldest and newest per group are computed here from the points sent.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import numpy as np
import pytest

from shopfloor.model import PointBatch
from shopfloor.server.api.schemas import StorageOut
from shopfloor.server.historian.retention_policy import PathRule, RetentionPolicy
from shopfloor.wire import ARROW_MEDIA_TYPE, encode_arrow

from .conftest import MakePlatform, Platform

SEC = 10**9
DAY = 86_400 * SEC
T0 = 1_767_225_600 * SEC  # 2026-01-01T00:00:00Z
TAGS = [
    "acme/p1/utilities/air/comp-1/pressure",
    "acme/p1/utilities/air/comp-1/power",
    "acme/p1/utilities/water/pump-1/flow",
    "acme/p1/machining/line-1/cnc-1/load",
    "acme/p1/machining/line-1/cnc-2/load",
]
PER_TAG = [3000, 1000, 500, 2500, 200]
NOW = T0 + 4 * DAY + 3600 * SEC


def ns_of(text: str | None) -> int | None:
    """An ISO 8601 UTC answer (however many fraction digits) as nanoseconds."""
    return None if text is None else int(np.datetime64(text.removesuffix("Z"), "ns").astype(int))


async def _platform(make_platform: MakePlatform, **historian: Any) -> tuple[Platform, Any]:
    platform = await make_platform(historian={"clock": lambda: NOW, **historian})
    rng = np.random.default_rng(3)
    paths, stamps = [], []
    for tag, n in zip(TAGS, PER_TAG, strict=True):
        ts = np.unique(rng.integers(T0, T0 + 4 * DAY, n))
        paths += [tag] * len(ts)
        stamps.append(ts)
    ts = np.concatenate(stamps)
    path = np.array(paths, dtype=object)
    index = np.array([TAGS.index(p) for p in paths])
    batch = PointBatch.from_columns(TAGS, index, ts, ts % 1000 / 10)
    answer = await platform.client.post(
        "/api/v1/ingest",
        content=encode_arrow(batch, edge="edge-s", seq=1),
        headers={"content-type": ARROW_MEDIA_TYPE},
    )
    assert answer.status_code == 200, answer.text
    return platform, (path, ts)


def _expected(path: np.ndarray, ts: np.ndarray, key: Any) -> dict[str, tuple[int, int, int]]:
    """(points, oldest, newest) per group key, from the points sent."""
    found: dict[str, list[int]] = defaultdict(list)
    for p, t in zip(path, ts, strict=True):
        found[key(p)].append(int(t))
    return {k: (len(v), min(v), max(v)) for k, v in found.items()}


async def test_storage_per_area_equipment_and_tag_matches_the_points_sent(
    make_platform: MakePlatform,
) -> None:
    platform, (path, ts) = await _platform(make_platform)
    keys = {
        "area": lambda p: "/".join(p.split("/")[:-1][:3]),
        "equipment": lambda p: p.rsplit("/", 1)[0],
        "tag": lambda p: p,
    }
    for group, key in keys.items():
        response = await platform.client.get("/api/v1/storage", params={"group": group})
        assert response.status_code == 200, response.text
        body = StorageOut.model_validate(response.json())
        want = _expected(path, ts, key)
        got = {g.key: (g.points, ns_of(g.oldest), ns_of(g.newest)) for g in body.groups}
        assert got == want
        sizes = [g.bytes + g.rollup_bytes for g in body.groups]
        assert sizes == sorted(sizes, reverse=True)  # largest first
        raw = [t for t in body.tables if t.kind == "raw"]
        assert sum(g.bytes for g in body.groups) == sum(t.used_bytes for t in raw)
        assert body.groups_total == len(want)
        assert body.totals.points == len(ts)
        assert body.totals.free_disk_bytes is not None
        assert body.totals.free_disk_bytes > 0
        assert body.backend == "duckdb"
    # the tag with the most points takes the most bytes (shared out by point count)
    per_tag = (await platform.client.get("/api/v1/storage?group=tag&top=1")).json()
    assert per_tag["groups"][0]["key"] == TAGS[int(np.argmax(PER_TAG))]
    assert per_tag["groups_total"] == len(TAGS)


async def test_prefix_narrows_to_whole_segments(make_platform: MakePlatform) -> None:
    platform, (path, _) = await _platform(make_platform)
    response = await platform.client.get(
        "/api/v1/storage", params={"group": "equipment", "prefix": "acme/p1/utilities/air"}
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert [g["key"] for g in body["groups"]] == ["acme/p1/utilities/air/comp-1"]
    assert body["groups"][0]["points"] == int(
        sum(1 for p in path if p.startswith("acme/p1/utilities/air/"))
    )
    assert body["prefix"] == "acme/p1/utilities/air"


@pytest.mark.parametrize(
    ("params", "field"),
    [({"group": "site"}, "group"), ({"prefix": "a//b"}, "prefix"), ({"top": "0"}, "top")],
)
async def test_bad_parameters_are_named(
    make_platform: MakePlatform, params: dict[str, str], field: str
) -> None:
    platform = await make_platform()
    response = await platform.client.get("/api/v1/storage", params=params)
    assert response.status_code == 422
    assert response.json()["error"]["field"] == field


async def test_retention_counters_show_in_healthz_and_the_report(
    make_platform: MakePlatform,
) -> None:
    policy = RetentionPolicy(
        raw_ns=2 * DAY,
        rules=(PathRule.of("acme/p1/machining", None),),
        text={"raw": "2d", "rules": "acme/p1/machining = forever"},
    )
    platform, (path, ts) = await _platform(make_platform, retention=policy)
    cutoff = (NOW - 2 * DAY) // DAY * DAY
    expired = int(sum(1 for p, t in zip(path, ts, strict=True) if "utilities" in p and t < cutoff))
    health = (await platform.client.get("/healthz")).json()["historian"]
    assert health["retention_deleted_points"] == 0
    assert health["budget_evictions"] == 0
    report = await platform.historian.apply_retention()
    assert report.raw_points == expired
    health = (await platform.client.get("/healthz")).json()["historian"]
    assert health["retention_deleted_points"] == expired
    assert health["storage_used_bytes"] == report.used_bytes
    body = (await platform.client.get("/api/v1/storage?group=area")).json()
    assert body["retention"]["raw"] == "2d"
    assert body["retention"]["deleted_points"] == expired
    assert body["retention"]["passes"] == 1
    assert ns_of(body["retention"]["last_pass"]) == NOW
    areas = {g["key"]: g for g in body["groups"]}
    assert ns_of(areas["acme/p1/utilities"]["oldest"]) >= cutoff
    machining = [t for p, t in zip(path, ts, strict=True) if "machining" in p]
    assert ns_of(areas["acme/p1/machining"]["oldest"]) == min(machining)  # kept forever
