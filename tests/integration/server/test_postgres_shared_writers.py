"""Several PostgresHistorians writing one schema (``historian.shared = true``), one process
here for speed; tests/system/test_scale_out.py does it with real worker processes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import psycopg
import pytest

from shopfloor.errors import HistorianError
from shopfloor.model import TagMeta
from shopfloor.server.historian.postgres import PostgresHistorian
from shopfloor.testing.historian_contract import seq_batch, stored_per_seq


@pytest.fixture
async def pair(dsn: str) -> AsyncIterator[tuple[PostgresHistorian, PostgresHistorian]]:
    one = PostgresHistorian(dsn, flush_interval_s=0.05, shared=True)
    two = PostgresHistorian(dsn, flush_interval_s=0.05, shared=True)
    # together, on an empty database: creating the schema must not race
    await asyncio.gather(one.start(), two.start())
    try:
        yield one, two
    finally:
        await one.close()
        await two.close()


async def test_a_batch_given_to_two_writers_is_stored_once(
    pair: tuple[PostgresHistorian, PostgresHistorian],
) -> None:
    one, two = pair
    # both get every seq at once, as after a worker died with batches in flight
    receipts = await asyncio.gather(
        *(
            h.write_acknowledged(seq_batch(seq), edge="e1", seq=seq)
            for seq in range(1, 21)
            for h in (one, two)
        )
    )
    stored = [r for r in receipts if not r.duplicate]
    assert len(stored) == 20
    assert sum(r.duplicate for r in receipts) == 20
    assert await stored_per_seq(one) == {seq: 50 for seq in range(1, 21)}
    # once more, later, to the other one: still a duplicate (the table decides, not memory)
    again = await one.write_acknowledged(seq_batch(7), edge="e1", seq=7)
    assert again.duplicate


async def test_tags_created_by_both_get_distinct_ids(
    pair: tuple[PostgresHistorian, PostgresHistorian], dsn: str
) -> None:
    one, two = pair
    await asyncio.gather(
        *(
            h.write_acknowledged(seq_batch(seq, tag=f"plant/{name}/t{seq}"), edge=name, seq=seq)
            for seq in range(1, 11)
            for name, h in (("a", one), ("b", two))
        ),
        two.register_tags([TagMeta("plant/meta/only", unit="bar")]),
    )
    async with await psycopg.AsyncConnection.connect(dsn) as con:
        cur = await con.execute("SELECT count(*), count(DISTINCT id) FROM shopfloor.tags")
        assert await cur.fetchone() == (21, 21)
    # each reads the tags and points the other stored
    await asyncio.sleep(1.5)  # one refresh of an idle writer
    assert await stored_per_seq(one, "plant/b/t3") == {3: 50}
    assert "plant/a/t4" in {m.path for m in await two.tags()}


async def test_an_unshared_historian_is_refused_beside_shared_ones(
    pair: tuple[PostgresHistorian, PostgresHistorian], dsn: str
) -> None:
    del pair
    alone = PostgresHistorian(dsn)
    with pytest.raises(HistorianError, match=r"historian\.shared = true"):
        await alone.start()
    await alone.close()


async def test_a_shared_historian_is_refused_beside_an_unshared_one(dsn: str) -> None:
    alone = PostgresHistorian(dsn)
    await alone.start()
    try:
        shared = PostgresHistorian(dsn, shared=True)
        with pytest.raises(HistorianError, match=r"historian\.shared = false"):
            await shared.start()
        await shared.close()
    finally:
        await alone.close()
