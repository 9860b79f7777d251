"""PostgresHistorian: what only the PostgreSQL backend has, against a real server.

Behaviour shared with DuckDB is the contract suite's (tests/contract/). Here: daily
partitions, the one-writer lock, TimescaleDB detection, and connections that are lost.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import pytest

from shopfloor.errors import HistorianError
from shopfloor.model import PointBatch, Quality
from shopfloor.server.historian import pg_schema
from shopfloor.server.historian.postgres import PostgresHistorian
from shopfloor.testing.historian_contract import seq_batch, stored_per_seq
from shopfloor.testing.postgres import PostgresServer, server_for_tests

SECOND = 10**9
DAY = 86_400 * SECOND
NOW = 1_750_000_000 * SECOND  # 2025-06-15 14:26:40 UTC


@pytest.fixture
async def admin(dsn: str) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
    """A connection of the test's own, beside the historian's."""
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as con:
        yield con


async def rows(con: psycopg.AsyncConnection[Any], query: str, *params: Any) -> list[Any]:
    cur = await con.execute(query, params or None)
    return await cur.fetchall()


async def writer_pid(con: psycopg.AsyncConnection[Any]) -> int:
    """The backend of the connection that holds the historian's writer lock."""
    found = await rows(
        con,
        "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND classid = %s AND granted",
        pg_schema.LOCK_CLASS,
    )
    assert len(found) == 1
    return int(found[0][0])


async def test_points_land_in_daily_partitions_made_on_demand(
    dsn: str, admin: psycopg.AsyncConnection[Any]
) -> None:
    day = NOW // DAY
    rng = np.random.default_rng(4)
    # today, in 20 days, and before 1970: days that have no partition yet
    ts = np.concatenate(
        [
            NOW + rng.integers(0, 3600 * SECOND, 300),
            NOW + 20 * DAY + rng.integers(0, 3600 * SECOND, 200),
            rng.integers(-DAY, 0, 100),
        ]
    )
    batch = PointBatch.from_columns(["p/a", "p/b"], rng.integers(0, 2, len(ts)), ts, ts % 97)
    # daily partitions are the layout of schemas made by version 1 (new ones: blocks)
    await admin.execute("CREATE SCHEMA shopfloor")
    await admin.execute("SET search_path TO shopfloor")
    for statement in (*pg_schema.DDL, *pg_schema.V1_PARTITIONED_DDL):
        await admin.execute(statement)
    await admin.execute("RESET search_path")
    h = PostgresHistorian(dsn, flush_interval_s=0.05, clock=lambda: NOW)
    await h.start()
    try:
        assert h.layout == "partitioned"
        made_ahead = {r[0] for r in await rows(admin, pg_schema_partitions())}
        assert made_ahead == {pg_schema.partition_name(day), pg_schema.partition_name(day + 1)}
        await h.write(batch)
        await h.flush()
    finally:
        await h.close()
    counts = dict(
        await rows(
            admin,
            "SELECT tableoid::regclass::text, count(*) FROM shopfloor.points GROUP BY 1",
        )
    )
    days, per_day = np.unique(ts // DAY, return_counts=True)
    want = {
        f"shopfloor.{pg_schema.partition_name(int(d))}": int(n)
        for d, n in zip(days, per_day, strict=True)
    }
    assert counts == want
    bounds = await rows(
        admin,
        "SELECT pg_get_expr(c.relpartbound, c.oid) FROM pg_class c WHERE c.relname = %s",
        pg_schema.partition_name(day + 20),
    )
    assert bounds == [(f"FOR VALUES FROM ('{(day + 20) * DAY}') TO ('{(day + 21) * DAY}')",)]
    # a restarted historian knows its partitions and writes into them again
    h = PostgresHistorian(dsn, flush_interval_s=0.05, clock=lambda: NOW)
    await h.start()
    try:
        await h.write(PointBatch.from_points([("p/a", NOW + 20 * DAY + 1, 1.0, Quality.GOOD)]))
        await h.flush()
        got = await h.read_raw("p/a", NOW + 20 * DAY, NOW + 21 * DAY, limit=10**6)
        assert got.num_rows == 1 + int(np.sum((ts // DAY == day + 20) & (batch.tag_index == 0)))
    finally:
        await h.close()


def pg_schema_partitions() -> str:
    return (
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "WHERE i.inhparent = 'shopfloor.points'::regclass"
    )


async def test_one_writer_per_schema(dsn: str) -> None:
    first = PostgresHistorian(dsn)
    await first.start()
    try:
        second = PostgresHistorian(dsn)
        with pytest.raises(HistorianError, match="another historian"):
            await second.start()
        elsewhere = PostgresHistorian(dsn, schema="plant2")  # another schema is another lock
        await elsewhere.start()
        await elsewhere.write(PointBatch.from_points([("x/y", NOW, 1.0, Quality.GOOD)]))
        await elsewhere.close()
    finally:
        await first.close()
    again = PostgresHistorian(dsn)  # the lock went with the first one's connection
    await again.start()
    try:
        assert [m.path for m in await again.tags()] == []  # schema shopfloor: no x/y
    finally:
        await again.close()


async def test_timescale_is_detected_not_assumed(dsn: str) -> None:
    required = PostgresHistorian(dsn, timescale=True)
    with pytest.raises(HistorianError, match="TimescaleDB"):
        await required.start()
    h = PostgresHistorian(dsn, timescale=None)  # auto looks and falls back to blocks
    await h.start()
    try:
        assert h.layout == "blocks"
    finally:
        await h.close()
    with pytest.raises(HistorianError, match="cannot change layout"):
        await PostgresHistorian(dsn, timescale=True).start()


async def test_writer_connection_killed_while_idle_is_replaced_without_a_failure(
    dsn: str, admin: psycopg.AsyncConnection[Any]
) -> None:
    h = PostgresHistorian(dsn, flush_interval_s=60)
    await h.start()
    try:
        await h.write_acknowledged(seq_batch(1), edge="e", seq=1)
        pid = await writer_pid(admin)
        await rows(admin, "SELECT pg_terminate_backend(%s, 5000)", pid)
        # the commit finds the connection dead before it stored anything: a new one
        # takes over, and the edge never hears of it
        receipt = await h.write_acknowledged(seq_batch(2), edge="e", seq=2)
        assert (receipt.accepted, receipt.duplicate) == (50, False)
        assert await writer_pid(admin) != pid
        assert (await h.write_acknowledged(seq_batch(1), edge="e", seq=1)).duplicate
        assert await stored_per_seq(h) == {1: 50, 2: 50}
    finally:
        await h.close()


async def test_connection_lost_during_commit_is_exactly_once(
    dsn: str, admin: psycopg.AsyncConnection[Any]
) -> None:
    h = PostgresHistorian(dsn, flush_interval_s=60)
    await h.start()
    try:
        await h.write_acknowledged(seq_batch(1), edge="e", seq=1)
        # a deferred trigger runs inside COMMIT: the backend kills itself there
        await admin.execute(
            "CREATE FUNCTION shopfloor.die() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN PERFORM pg_terminate_backend(pg_backend_pid()); RETURN NULL; END $$"
        )
        await admin.execute(
            "CREATE CONSTRAINT TRIGGER die AFTER INSERT ON shopfloor.ingest_ledger "
            "DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION shopfloor.die()"
        )
        with pytest.raises(HistorianError):
            await h.write_acknowledged(seq_batch(2), edge="e", seq=2)
        await admin.execute("DROP TRIGGER die ON shopfloor.ingest_ledger")
        again = await h.write_acknowledged(seq_batch(2), edge="e", seq=2)  # the edge resends
        assert (again.accepted, again.duplicate) == (50, False)
        assert await stored_per_seq(h) == {1: 50, 2: 50}
    finally:
        await h.close()
    assert await rows(admin, "SELECT seq FROM shopfloor.ingest_ledger ORDER BY seq") == [
        (1,),
        (2,),
    ]


async def test_read_connection_killed_fails_one_read_only(
    dsn: str, admin: psycopg.AsyncConnection[Any]
) -> None:
    h = PostgresHistorian(dsn, flush_interval_s=60, read_connections=1)
    await h.start()
    try:
        await h.write_acknowledged(seq_batch(1), edge="e", seq=1)
        assert await stored_per_seq(h) == {1: 50}
        readers = await rows(
            admin,
            "SELECT pid FROM pg_stat_activity WHERE application_name = 'shopfloor-historian' "
            "AND datname = current_database() AND pid <> %s",
            await writer_pid(admin),
        )
        assert len(readers) == 1
        await rows(admin, "SELECT pg_terminate_backend(%s, 5000)", readers[0][0])
        with pytest.raises(HistorianError):
            await stored_per_seq(h)
        assert await stored_per_seq(h) == {1: 50}  # a new connection replaced it
    finally:
        await h.close()


async def test_server_restart_fails_the_commits_it_interrupts_then_recovers() -> None:
    # this server defaults to synchronous_commit=off; the writer's session turns it on,
    # or the acknowledged seq 1 would be lost with the killed server's WAL buffers
    with PostgresServer() as server:
        dsn = server.create_database("restart")
        h = PostgresHistorian(dsn, flush_interval_s=60)
        await h.start()
        try:
            await h.write_acknowledged(seq_batch(1), edge="e", seq=1)
            server.kill()
            with pytest.raises(HistorianError):  # no server: nothing can be promised
                await h.write_acknowledged(seq_batch(2), edge="e", seq=2)
            with pytest.raises(HistorianError):
                await stored_per_seq(h)
            server.start()  # blocks the loop for a moment: nothing else runs here
            assert (await h.write_acknowledged(seq_batch(2), edge="e", seq=2)).accepted == 50
            assert (await h.write_acknowledged(seq_batch(1), edge="e", seq=1)).duplicate
            assert await stored_per_seq(h) == {1: 50, 2: 50}
        finally:
            await h.close()


async def test_unreachable_server_is_a_historian_error() -> None:
    from shopfloor.testing.processes import free_port

    h = PostgresHistorian(f"host=127.0.0.1 port={free_port()} dbname=x user=x connect_timeout=2")
    with pytest.raises(HistorianError):
        await h.start()
    with pytest.raises(ValueError, match="connection string"):
        PostgresHistorian("this is = not a dsn =")


def test_missing_postgres_skips_but_fails_under_ci(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CI", "false")
    with pytest.raises(pytest.skip.Exception, match="apt-get install postgresql"):
        server_for_tests(bindir=tmp_path)
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI must run"):
        server_for_tests(bindir=tmp_path)
