"""The committed-points feed is bounded (issue 9): with nobody consuming it, the writers
keep the rows of the last commits only (drop-oldest), count what they dropped and log it
once — against a real PostgreSQL."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import psycopg
import pytest

from shopfloor.server.historian.pg_feed import FEED_TABLES, FeedBound, write_feed


@pytest.fixture
async def con(dsn: str) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as con:
        for statement in FEED_TABLES:
            await con.execute(statement)
        yield con


async def _rows(con: psycopg.AsyncConnection[Any]) -> list[tuple[int, int]]:
    cur = await con.execute("SELECT part, seq FROM point_feed ORDER BY seq, part")
    return [(int(p), int(s)) for p, s in await cur.fetchall()]


async def test_an_unconsumed_feed_keeps_the_last_commits_and_counts_the_dropped(
    con: psycopg.AsyncConnection[Any], caplog: pytest.LogCaptureFixture
) -> None:
    bound = FeedBound(max_commits=3, every=1)
    with caplog.at_level(logging.WARNING, logger="shopfloor.server.historian.pg_feed"):
        for commit in range(10):  # each commit feeds two partitions: two rows, one seq
            await write_feed(con, ([0, 1], [7, 7], [commit, commit], [1.0, 2.0], [0, 0]), bound)
    rows = await _rows(con)
    # the rows of the last 3 commits (seq 8, 9, 10) are left, for both partitions
    assert rows == [(part, seq) for seq in (8, 9, 10) for part in (0, 1)]
    assert bound.dropped == 14  # commits 1..7, two rows each
    warnings = [r for r in caplog.records if "dropping its oldest rows" in r.getMessage()]
    assert len(warnings) == 1


async def test_the_bound_is_checked_only_every_few_commits(
    con: psycopg.AsyncConnection[Any],
) -> None:
    bound = FeedBound(max_commits=2, every=4)
    for commit in range(7):
        await write_feed(con, ([0], [7], [commit], [1.0], [0]), bound)
    # trimmed once, at seq 4 (rows up to seq 2 gone); seqs 3..7 left until seq 8
    assert [seq for _, seq in await _rows(con)] == [3, 4, 5, 6, 7]
    assert bound.dropped == 2
    with pytest.raises(ValueError, match="max_commits"):
        FeedBound(max_commits=0)
