"""The SQL of docs/grafana.md, run as written against a real PostgreSQL historian.

The setup block creates the views and the read-only role; each query block runs as that
role with Grafana's macros expanded, and its rows are compared with numpy over the points
written.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import pytest

from shopfloor.model import PointBatch, Quality
from shopfloor.server.historian.postgres import PostgresHistorian
from shopfloor.testing.postgres import PostgresServer

DOC = Path(__file__).resolve().parents[3] / "docs" / "grafana.md"
SEC = 10**9
T0 = 1_767_225_600 * SEC  # 2026-01-01T00:00:00Z
TAGS = ["acme/p1/line-1/cnc-1/temp", "acme/p1/line-1/cnc-1/load", "acme/p1/line-1/cnc-1/prog"]
N = 600


def doc_sql(name: str) -> str:
    """The ```sql block of docs/grafana.md whose first line is ``-- grafana: <name>``."""
    blocks = re.findall(r"```sql\n(.*?)```", DOC.read_text(), flags=re.DOTALL)
    found = [b for b in blocks if b.startswith(f"-- grafana: {name}\n")]
    assert len(found) == 1, f"docs/grafana.md has {len(found)} blocks named {name}"
    return found[0]


def expand(query: str, *, start_ns: int, end_ns: int, interval_ms: int, tags: list[str]) -> str:
    """Grafana's SQL macros as its PostgreSQL data source expands them."""
    query = re.sub(
        r"\$__unixEpochNanoFilter\((\w+)\)", rf"\1 >= {start_ns} AND \1 <= {end_ns}", query
    )
    query = query.replace("$__interval_ms", str(interval_ms))
    return query.replace("$tag", ",".join("'" + t.replace("'", "''") + "'" for t in tags))


def data() -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Two numeric tags with Bad and Uncertain points, one text tag (NaN values)."""
    rng = np.random.default_rng(8)
    out = {}
    for k, tag in enumerate(TAGS):
        ts = T0 + k * 333_000_000 + np.arange(N, dtype=np.int64) * SEC
        value = np.round(rng.normal(20 * (k + 1), 2, N), 4) if k < 2 else np.full(N, np.nan)
        quality = np.full(N, Quality.GOOD, dtype=np.uint32)
        quality[np.arange(N) % 6 == 1] = Quality.BAD_SENSOR_FAILURE
        quality[np.arange(N) % 6 == 4] = Quality.UNCERTAIN_LAST_USABLE_VALUE
        out[tag] = (ts, value, quality)
    return out


@pytest.fixture
def dsn(postgres_server: PostgresServer) -> Iterator[str]:
    dsn = postgres_server.create_database()
    try:
        yield dsn
    finally:
        postgres_server.drop_database(dsn.rsplit("dbname=", 1)[1])
        with psycopg.connect(postgres_server.dsn(), autocommit=True) as con:
            con.execute("DROP ROLE IF EXISTS grafana_reader")


@pytest.fixture
async def loaded(dsn: str) -> str:
    """The database after a PostgresHistorian stored :func:`data` (and closed)."""
    historian = PostgresHistorian(dsn, flush_interval_s=0.05)
    await historian.start()
    try:
        rows = [
            (tag, int(t), "step" if np.isnan(v) else float(v), int(q))
            for tag, (ts, values, quality) in data().items()
            for t, v, q in zip(ts, values, quality, strict=True)
        ]
        await historian.write(PointBatch.from_points(rows))
    finally:
        await historian.close()  # commits what was accepted
    return dsn


@pytest.fixture
def reader(loaded: str) -> Iterator[psycopg.Connection[Any]]:
    """The setup block run by the historian's owner, then a session as grafana_reader."""
    dbname = loaded.rsplit("dbname=", 1)[1]
    setup = doc_sql("setup").replace("DATABASE shopfloor", f'DATABASE "{dbname}"')
    with psycopg.connect(loaded, autocommit=True) as owner:
        owner.execute(setup.encode())  # several statements, no parameters
    with psycopg.connect(loaded.replace("user=postgres", "user=grafana_reader")) as con:
        yield con


def rows(con: psycopg.Connection[Any], query: str) -> list[tuple[Any, ...]]:
    return con.execute(query.encode()).fetchall()


def ns_to_datetime(ns: int) -> datetime:
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=ns // 1000)


def test_raw_query_returns_good_points_of_the_chosen_tags(
    reader: psycopg.Connection[Any],
) -> None:
    start, end = T0 + 100 * SEC, T0 + 160 * SEC
    got = rows(
        reader,
        expand(doc_sql("query raw"), start_ns=start, end_ns=end, interval_ms=0, tags=TAGS[:2]),
    )
    want = []
    for tag in TAGS[:2]:
        ts, value, quality = data()[tag]
        keep = (ts >= start) & (ts <= end) & (quality == Quality.GOOD)
        want += [
            (ns_to_datetime(int(t)), tag, float(v))
            for t, v in zip(ts[keep], value[keep], strict=True)
        ]
    assert sorted(got) == sorted(want)
    assert [r[0] for r in got] == sorted(r[0] for r in got)


def test_bucket_query_matches_the_api_average_per_interval(
    reader: psycopg.Connection[Any],
) -> None:
    start, end, width_ms = T0, T0 + 400 * SEC, 30_000
    got = rows(
        reader,
        expand(
            doc_sql("query buckets"), start_ns=start, end_ns=end, interval_ms=width_ms, tags=TAGS
        ),
    )
    want = []
    for tag in TAGS:
        ts, value, quality = data()[tag]
        keep = (ts >= start) & (ts <= end) & (quality == Quality.GOOD) & ~np.isnan(value)
        buckets = ts[keep] // (width_ms * 10**6) * (width_ms * 10**6)
        for b in np.unique(buckets):
            want.append((ns_to_datetime(int(b)), tag, float(value[keep][buckets == b].mean())))
    assert len(got) == len(want)
    assert {r[1] for r in got} == set(TAGS[:2])  # the text tag has no average
    for (t, tag, avg), (wt, wtag, wavg) in zip(sorted(got), sorted(want), strict=True):
        assert (t, tag) == (wt, wtag)
        assert avg == pytest.approx(wavg, rel=1e-12)


def test_latest_query_shows_the_last_point_with_its_unsigned_quality(
    reader: psycopg.Connection[Any],
) -> None:
    got = rows(reader, doc_sql("query latest"))
    want = []
    for tag in sorted(TAGS):
        ts, value, quality = data()[tag]
        text = "step" if np.isnan(value[-1]) else None
        shown = None if np.isnan(value[-1]) else float(value[-1])
        want.append((tag, ns_to_datetime(int(ts[-1])), shown, int(quality[-1]), text))
    got = [(p, t, None if v is None or np.isnan(v) else v, q, x) for p, t, v, q, x in got]
    assert got == want


def test_grafana_reader_can_read_only_the_views(reader: psycopg.Connection[Any]) -> None:
    assert rows(reader, "SHOW default_transaction_read_only") == [("on",)]
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        reader.execute("SELECT count(*) FROM shopfloor.points")
    reader.rollback()
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        reader.execute("SELECT count(*) FROM shopfloor.ingest_ledger")
    reader.rollback()
    with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
        reader.execute("CREATE TABLE grafana.mine(a int)")
    reader.rollback()
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        reader.execute("DELETE FROM grafana.tags")
    reader.rollback()
    assert rows(reader, "SELECT count(*) FROM grafana.tags") == [(len(TAGS),)]
