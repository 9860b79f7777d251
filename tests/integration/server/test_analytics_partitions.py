"""Analytics partitioned across API servers (issue 9): the leases on one PostgreSQL, a
dead server's partitions moving to a survivor, and OEE jobs computing only the machines
of the partitions they lease — then all of them once the other server is gone."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from importlib import resources
from pathlib import Path

import psycopg

from shopfloor.config import ShopfloorConfig
from shopfloor.config.analytics import AnalyticsSection
from shopfloor.model import PointBatch, now_ns
from shopfloor.server.analytics.job import OeeJob
from shopfloor.server.analytics.machines import PARTS, STATE, Machine, machines_of
from shopfloor.server.analytics.ownership import ANALYTICS_LOCK_CLASS, AnalyticsOwner
from shopfloor.server.analytics.service import Analytics
from shopfloor.server.app import Server
from shopfloor.server.assets import load_asset_model
from shopfloor.server.historian.postgres import PostgresHistorian
from shopfloor.server.rules.partitioned import PARTITION_LOCK_CLASS
from shopfloor.server.rules.partitions import partition_of
from shopfloor.testing.auth import shared_secret_key
from shopfloor.testing.leases import running, wait_until

PARTITIONS = 8
H = 3600 * 10**9
DEMO = Path(str(resources.files("shopfloor") / "demo_plant"))


@contextmanager
def _owner(dsn: str, member: str) -> Iterator[AnalyticsOwner]:
    """An API server's analytics leases, on a thread of this process."""
    owner = AnalyticsOwner(dsn, "shopfloor", PARTITIONS, member=member, poll_s=0.05)
    with running(owner, f"leases-{member}"):
        yield owner


def _split(a: AnalyticsOwner, b: AnalyticsOwner) -> bool:
    return (
        len(a.held) == len(b.held) == PARTITIONS // 2
        and not a.held & b.held
        and (a.held | b.held) == set(range(PARTITIONS))
    )


def _locks(dsn: str) -> dict[int, int]:
    """Per backend pid, how many analytics partitions it holds (from ``pg_locks``)."""
    with psycopg.connect(dsn) as con:
        rows = con.execute(
            "SELECT pid, count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted "
            "AND classid = %s AND objsubid = 2 GROUP BY pid",
            [ANALYTICS_LOCK_CLASS],
        ).fetchall()
    return {int(pid): int(n) for pid, n in rows}


def test_two_servers_split_the_partitions_and_a_stopped_ones_move(dsn: str) -> None:
    with _owner(dsn, "a") as a:
        wait_until("a holds every partition alone", lambda: len(a.held) == PARTITIONS)
        with _owner(dsn, "b") as b:
            wait_until("an even split, none held twice", lambda: _split(a, b))
            # what PostgreSQL says: two sessions, each with its half, no lock twice
            assert sorted(_locks(dsn).values()) == [PARTITIONS // 2] * 2
            assert a.owns("x/y") != b.owns("x/y")
        wait_until("a holds every partition again", lambda: len(a.held) == PARTITIONS)
        assert a.leases.released == PARTITIONS // 2
    assert _locks(dsn) == {}  # a clean stop gives every lease back


def test_analytics_and_alarm_leases_do_not_meet(dsn: str) -> None:
    assert ANALYTICS_LOCK_CLASS != PARTITION_LOCK_CLASS
    with _owner(dsn, "a") as a:
        wait_until("a holds every partition", lambda: len(a.held) == PARTITIONS)
        with psycopg.connect(dsn, autocommit=True) as con:
            # an alarm owner's lock on partition 0 of the same schema is still free
            key = a.leases._key(0)
            row = con.execute(
                "SELECT pg_try_advisory_lock(%s, %s)", [PARTITION_LOCK_CLASS, key]
            ).fetchone()
            assert row is not None
            assert row[0]


_CHILD = """
import sys, threading
from shopfloor.server.analytics.ownership import AnalyticsOwner
owner = AnalyticsOwner(sys.argv[1], "shopfloor", int(sys.argv[2]), member="child", poll_s=0.05)
owner.run(threading.Event())
"""


def test_a_killed_servers_partitions_move_to_the_survivor_within_seconds(dsn: str) -> None:
    with _owner(dsn, "survivor") as survivor:
        wait_until("the survivor holds every partition", lambda: len(survivor.held) == PARTITIONS)
        child = subprocess.Popen(
            [sys.executable, "-c", _CHILD, dsn, str(PARTITIONS)],
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        try:
            wait_until(
                "the other server takes its half",
                lambda: (
                    len(survivor.held) == PARTITIONS // 2
                    and sorted(_locks(dsn).values()) == [PARTITIONS // 2] * 2
                ),
                timeout_s=60,
            )
            child.send_signal(signal.SIGKILL)
            child.wait(30)
            # PostgreSQL frees a killed session's locks; the survivor polls for them
            wait_until(
                "the survivor holds every partition again",
                lambda: len(survivor.held) == PARTITIONS,
                timeout_s=10,
            )
        finally:
            if child.poll() is None:
                child.kill()
                child.wait(30)


# ---------------------------------------------------------------------- the OEE jobs
def _points(machines: list[Machine], t0: int) -> PointBatch:
    """Each machine running with parts from ``t0`` on: hours for the job to compute."""
    rows: list[tuple[str, int, float, int]] = []
    for m in machines:
        rows += [(m.tag(STATE), t0, 1, 0), (m.tag(PARTS), t0, 0, 0)]
        rows += [(m.tag(PARTS), t0 + k * H + 1, 40 * k, 0) for k in range(1, 4)]
    return PointBatch.from_points(rows)


@asynccontextmanager
async def _runner(
    historian: PostgresHistorian, machines: list[Machine], data_dir: Path, owner: AnalyticsOwner
) -> AsyncIterator[tuple[Analytics, OeeJob]]:
    """One API server's OEE job, with its own analytics store."""
    section = AnalyticsSection.model_validate(
        {"store": f"{owner.leases.member}.sqlite", "oee": {"backfill": "1d", "settle": "1m"}}
    )
    analytics = Analytics(historian, machines, section, data_dir)
    await analytics.start()
    try:
        yield analytics, OeeJob(analytics, section.oee, owns=owner.owns)
    finally:
        await analytics.close()


async def _computed(analytics: Analytics, machines: list[Machine], t0: int) -> set[str]:
    """The machines with OEE hours in the store ``analytics`` reads."""
    stored = await analytics.stored_hours(machines, t0, now_ns())
    return {path for path, hours in stored.items() if hours}


async def test_two_job_runners_compute_their_partitions_and_a_survivor_all(
    dsn: str, tmp_path: Path
) -> None:
    assets = load_asset_model(DEMO / "plant.toml", DEMO / "templates")
    machines = [m for m in machines_of(assets) if m.oee]
    parts = {partition_of(m.path, PARTITIONS) for m in machines}
    assert len(parts) > 1  # the demo's machines are in several partitions
    historian = PostgresHistorian(dsn, shared=True, flush_interval_s=0.05)
    await historian.start()
    try:
        await historian.register_tags(assets.tags)
        t0 = (now_ns() // H - 6) * H
        await historian.write(_points(machines, t0))
        await historian.flush()
        with _owner(dsn, "b") as b:
            async with _runner(historian, machines, tmp_path, b) as (store_b, job_b):
                with _owner(dsn, "a") as a:
                    await asyncio.to_thread(wait_until, "an even split", lambda: _split(a, b))
                    async with _runner(historian, machines, tmp_path, a) as (
                        store_a,
                        job_a,
                    ):
                        assert await job_a.step() > 0
                        assert await job_b.step() > 0
                        mine_a = {m.path for m in machines if a.owns(m.path)}
                        mine_b = {m.path for m in machines if b.owns(m.path)}
                        assert mine_a
                        assert mine_b
                        assert not mine_a & mine_b
                        assert mine_a | mine_b == {m.path for m in machines}
                        assert await _computed(store_a, machines, t0) == mine_a
                        assert await _computed(store_b, machines, t0) == mine_b
                # a stopped: b leases every partition and its job catches up the rest
                await asyncio.to_thread(
                    wait_until, "b holds every partition", lambda: len(b.held) == PARTITIONS
                )
                assert await job_b.step() > 0
                assert await _computed(store_b, machines, t0) == {m.path for m in machines}
                assert await job_b.step() == 0  # nothing missing any more
    finally:
        await historian.close()


# ---------------------------------------------------------------------- two servers
@asynccontextmanager
async def _server(dsn: str, data_dir: Path) -> AsyncIterator[Server]:
    """A `shopfloor server` of the demo plant on the shared historian, in this process."""
    await asyncio.to_thread(data_dir.mkdir)
    config = ShopfloorConfig.model_validate(
        {
            "server": {"port": 0, "data_dir": str(data_dir)},
            "historian": {"kind": "postgres", "dsn": dsn, "shared": True},
            "security": {"secret_key_file": str(shared_secret_key(data_dir.parent))},
            "assets": {"plant": str(DEMO / "plant.toml")},
            "analytics": {
                "partitions": PARTITIONS,
                "oee": {"backfill": "1d", "settle": "1m", "interval": "1h"},
            },
        }
    ).resolve_paths(data_dir)
    server = Server(config)
    try:
        await server.start()
        yield server
    finally:
        await server.close()


async def test_servers_run_the_oee_job_for_their_share_and_a_survivor_for_all(
    dsn: str, tmp_path: Path
) -> None:
    async with _server(dsn, tmp_path / "b") as b:
        assert b.analytics_owner is not None
        assert b.analytics is not None
        assert b.oee_job is not None
        machines = [m for m in b.analytics.machines if m.oee]
        async with _server(dsn, tmp_path / "a") as a:
            assert a.analytics_owner is not None
            assert a.analytics is not None
            assert a.oee_job is not None
            await asyncio.to_thread(
                wait_until, "an even split", lambda: _split(a.analytics_owner, b.analytics_owner)
            )
            t0 = (now_ns() // H - 6) * H
            await a.ingest_local(_points(machines, t0))
            await a.historian.flush()
            states = {m.tag(STATE) for m in machines}
            async with asyncio.timeout(20):  # b reads the tags a stored every second
                while not states <= {t.path for t in await b.historian.tags()}:  # noqa: ASYNC110 - no event to wait on
                    await asyncio.sleep(0.05)
            # one analytics store in the shared PostgreSQL: what a step adds is its share
            mine_a = {m.path for m in machines if a.analytics_owner.owns(m.path)}
            mine_b = {m.path for m in machines if b.analytics_owner.owns(m.path)}
            assert mine_a
            assert mine_b
            assert not mine_a & mine_b
            await b.oee_job.step()
            assert await _computed(a.analytics, machines, t0) == mine_b
        # a closed before its job ran: its leases were given back, b computes a's machines
        await asyncio.to_thread(
            wait_until, "b holds every partition", lambda: len(b.analytics_owner.held) == PARTITIONS
        )
        assert await b.oee_job.step() > 0
        assert await _computed(b.analytics, machines, t0) == {m.path for m in machines}
    assert _locks(dsn) == {}
