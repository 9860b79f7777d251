"""Alarms partitioned across ingest workers (issue 9): partition ownership through advisory
locks, and alarms evaluated exactly once from the committed-points feed — with shared
historians and partition owners in this process (threads) for speed;
tests/system/test_scale_out.py does it with real worker processes and a SIGKILL."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import psycopg
import pytest

from shopfloor.errors import PayloadError
from shopfloor.model import PointBatch, now_ns
from shopfloor.server.historian.postgres import PostgresHistorian
from shopfloor.server.rules.alarms import AlarmEvent, AlarmState
from shopfloor.server.rules.engine import AlarmEngine
from shopfloor.server.rules.partitioned import PartitionOwner
from shopfloor.server.rules.partitions import PartitionMap, equipment_of, partition_of
from shopfloor.server.rules.pg_journal import PgAlarmJournal
from shopfloor.server.rules.rule import AlarmRule
from shopfloor.testing.leases import running, wait_until
from shopfloor.testing.postgres import PostgresServer

MACHINES = 6
PARTITIONS = 8
LIMIT = 0.7
SAMPLES = 20


def _tag(machine: int) -> str:
    return f"plant/area/line/cell/m{machine}/temp"


RULES = [AlarmRule(name=f"m{m}.H", tag=_tag(m), kind="H", limit=LIMIT) for m in range(MACHINES)]


@pytest.fixture
def dsn(postgres_server: PostgresServer) -> Iterator[str]:
    dsn = postgres_server.create_database()

    async def create_schema() -> None:  # as a worker's historian does before its owner starts
        historian = PostgresHistorian(dsn, shared=True)
        await historian.start()
        await historian.close()

    asyncio.run(create_schema())
    yield dsn
    postgres_server.drop_database(dsn.rsplit("dbname=", 1)[1])


@contextmanager
def _owner(dsn: str, member: str, partitions: PartitionMap) -> Iterator[PartitionOwner]:
    owner = PartitionOwner(dsn, "shopfloor", partitions, member=member, poll_s=0.05)
    with running(owner, f"owner-{member}"):
        yield owner


def test_the_split_is_the_same_everywhere_and_keeps_a_machine_together() -> None:
    split = PartitionMap(RULES, PARTITIONS)
    assert equipment_of(_tag(3)) == "plant/area/line/cell/m3"
    # crc32, not Python's salted hash: the same partition in every process
    assert partition_of("plant/area/line/cell/m3", PARTITIONS) == 389297284 % PARTITIONS
    assert sum(len(split.rules(p)) for p in range(PARTITIONS)) == MACHINES
    assert split.route(_tag(3)) == (partition_of("plant/area/line/cell/m3", PARTITIONS),)
    assert split.route("plant/area/line/cell/m3/other") == ()


def test_owners_share_the_partitions_and_a_stopped_owners_move(dsn: str) -> None:
    split = PartitionMap(RULES, PARTITIONS)
    with _owner(dsn, "a", split) as a:
        wait_until("a holds every partition alone", lambda: len(a.held) == PARTITIONS)
        with _owner(dsn, "b", split) as b:
            # a gives back what is beyond its fair share, b takes it
            wait_until(
                "an even split",
                lambda: len(a.held) == len(b.held) == PARTITIONS // 2,
            )
            assert not a.held & b.held
        wait_until("a holds every partition again", lambda: len(a.held) == PARTITIONS)
        assert a.released == PARTITIONS // 2


def _batch(seq: int, rng: np.random.Generator, t0: int) -> PointBatch:
    """SAMPLES values per machine, later than every earlier seq's."""
    ts = t0 + seq * SAMPLES + np.tile(np.arange(SAMPLES), MACHINES)
    return PointBatch.from_columns(
        [_tag(m) for m in range(MACHINES)] + ["plant/area/line/cell/m0/unwatched"],
        np.r_[np.repeat(np.arange(MACHINES), SAMPLES), [MACHINES]],
        np.r_[ts, [t0]],
        np.r_[rng.random(MACHINES * SAMPLES), [1.0]],
    )


def _expected(batches: list[PointBatch]) -> dict[str, tuple[int, int]]:
    """Per alarm, (activations, clears) an H alarm without deadband or delay goes through."""
    out = {}
    for m in range(MACHINES):
        values = np.concatenate(
            [b.value[: MACHINES * SAMPLES][b.tag_index[: MACHINES * SAMPLES] == m] for b in batches]
        )
        on = np.r_[False, values > LIMIT]
        out[f"m{m}.H"] = (int((on[1:] & ~on[:-1]).sum()), int((~on[1:] & on[:-1]).sum()))
    return out


def _journaled(dsn: str) -> dict[str, tuple[int, int]]:
    with psycopg.connect(dsn) as con:
        rows = con.execute(
            "SELECT alarm, count(*) FILTER (WHERE event = 'activated'), "
            "count(*) FILTER (WHERE event = 'cleared') FROM shopfloor.alarm_journal "
            "GROUP BY alarm"
        ).fetchall()
    return {alarm: (int(on), int(off)) for alarm, on, off in rows}


async def test_alarms_of_points_stored_by_two_writers_are_journaled_exactly_once(
    dsn: str,
) -> None:
    split = PartitionMap(RULES, PARTITIONS)
    one = PostgresHistorian(dsn, flush_interval_s=0.05, shared=True, feed=split.route)
    two = PostgresHistorian(dsn, flush_interval_s=0.05, shared=True, feed=split.route)
    await asyncio.gather(one.start(), two.start())
    rng = np.random.default_rng(9)
    t0 = now_ns()
    batches = [_batch(seq, rng, t0) for seq in range(1, 41)]
    engine = AlarmEngine(
        RULES, lambda: PgAlarmJournal(dsn, "shopfloor"), follow=True, remote_timeout_s=1.0
    )
    try:
        with _owner(dsn, "a", split), _owner(dsn, "b", split):
            for seq, batch in enumerate(batches, start=1):
                first, second = (one, two) if seq % 2 else (two, one)
                assert not (await first.write_acknowledged(batch, edge="e", seq=seq)).duplicate
                # the same batch again through the other writer: stored and fed once
                assert (await second.write_acknowledged(batch, edge="e", seq=seq)).duplicate
            expected = _expected(batches)
            assert sum(on for on, _ in expected.values()) > 40  # the load crossed the limit
            await asyncio.to_thread(
                wait_until, "every transition journaled", lambda: _journaled(dsn) == expected
            )
            # an API server's view: an engine following the shared journal
            await engine.start()
            shown = {a.rule.name: a.status for a in engine.alarms()}
            for m in range(MACHINES):
                last = batches[-1].value[batches[-1].tag_index == m][-1]
                assert shown[f"m{m}.H"].condition == (last > LIMIT)
            entries = await engine.journal(alarm="m0.H", limit=10_000)
            assert len(entries) == sum(expected["m0.H"])
            # an operator acknowledges through it: the owner applies it and journals it
            before = shown["m0.H"].state  # it activated: B, or D if it cleared since
            assert before in (AlarmState.UNACKNOWLEDGED, AlarmState.RETURNED_UNACKNOWLEDGED)
            done = await engine.acknowledge("m0.H", user="op", comment="seen")
            assert (done.event, done.before, done.user) == (AlarmEvent.ACKNOWLEDGED, before, "op")
            assert engine.state_of("m0.H") is done.after
            assert done.after in (AlarmState.ACKNOWLEDGED, AlarmState.NORMAL)
            last = (await engine.journal(alarm="m0.H", newest_first=True, limit=1))[0]
            assert (last.event, last.comment) == (AlarmEvent.ACKNOWLEDGED, "seen")
            # refused by the owner's state machine: the field and reason come back
            with pytest.raises(PayloadError, match="nothing to acknowledge") as refused:
                await engine.acknowledge("m0.H", user="op")
            assert refused.value.field == "state"
        # no owner left: the action waits, then a clear error
        with pytest.raises(PayloadError, match="no ingest worker"):
            await engine.comment("m1.H", user="op", comment="anyone?")
    finally:
        await engine.close()
        await one.close()
        await two.close()
    with psycopg.connect(dsn) as con:
        (left,) = con.execute("SELECT count(*) FROM shopfloor.point_feed").fetchone() or (0,)
    assert left == 0  # the owners deleted what they consumed
