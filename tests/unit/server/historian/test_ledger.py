"""The ingest ledger's index: exact membership, bounded memory, rebuilt from its table."""

from __future__ import annotations

import duckdb
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from shopfloor.server.historian import schema
from shopfloor.server.historian.ledger import BUCKET_NS, EdgeSeqs, Ledger

MINUTE = 60 * 10**9
DAY = 86400 * 10**9
T0 = 1_764_000_000 * 10**9 // BUCKET_NS * BUCKET_NS


@given(seqs=st.lists(st.integers(1, 300), max_size=400))
@settings(max_examples=200, deadline=None)
def test_seen_is_exactly_the_set_of_added_seqs(seqs: list[int]) -> None:
    edge = EdgeSeqs("e")
    added: set[int] = set()
    for seq in seqs:
        assert edge.seen(seq) == (seq in added)
        if seq not in added:
            edge.add(seq, max_gaps=1000)
            added.add(seq)
    assert [s for s in range(1, 320) if edge.seen(s)] == sorted(added)
    # compact: the mark is the longest run from 1, ranges are the other runs
    run = 0
    while run + 1 in added:
        run += 1
    assert edge.floor == run
    above = sorted(s for s in added if s > run)
    runs = 1 + int(np.count_nonzero(np.diff(above) != 1)) if above else 0
    assert len(edge.starts) == runs


@given(seqs=st.lists(st.integers(1, 500), max_size=300), max_gaps=st.integers(1, 5))
@settings(max_examples=200, deadline=None)
def test_gap_bound_never_forgets_an_applied_seq(seqs: list[int], max_gaps: int) -> None:
    edge = EdgeSeqs("e")
    added: set[int] = set()
    for seq in seqs:
        if not edge.seen(seq):
            edge.add(seq, max_gaps=max_gaps)
            added.add(seq)
        assert len(edge.starts) <= max_gaps
    assert all(edge.seen(s) for s in added)
    # what counts as seen without having been added lies below the mark: given-up gaps
    given_up = [s for s in range(1, 520) if edge.seen(s) and s not in added]
    assert all(s <= edge.floor for s in given_up)
    assert edge.abandoned == len(given_up)


def test_seqs_committed_before_the_retention_are_given_up() -> None:
    ledger = Ledger(retention_ns=DAY, max_gaps=100)
    ledger.record(T0, [("e", 1, 10), ("e", 5, 10)])  # 2..4 never arrive (dropped)
    ledger.record(T0 + 2 * MINUTE, [("e", 8, 10)])  # 6, 7 missing too
    ledger.expire(T0 + DAY)  # not yet a full day past the first commit's minute
    assert [ledger.seen("e", s) for s in range(1, 9)] == [1, 0, 0, 0, 1, 0, 0, 1]
    ledger.expire(T0 + DAY + MINUTE)  # the first minute is past retention
    assert [ledger.seen("e", s) for s in range(1, 9)] == [1, 1, 1, 1, 1, 0, 0, 1]
    assert ledger.snapshot["e"].low_water == 5
    assert ledger.snapshot["e"].abandoned == 3
    ledger.expire(T0 + DAY + 3 * MINUTE)
    assert ledger.snapshot["e"].low_water == 8
    assert ledger.snapshot["e"].gaps == 0


def _table_ledger(rows: list[tuple[str, int, int]], now: int, *, max_gaps: int) -> Ledger:
    """A ledger rebuilt the way the writer does it on open, from a real DuckDB table."""
    con = duckdb.connect(":memory:")
    schema.create(con)
    for edge, seq, committed_at in rows:
        con.execute("INSERT INTO ingest_ledger VALUES (?, ?, 1, ?)", [edge, seq, committed_at])
    ledger = Ledger(retention_ns=DAY, max_gaps=max_gaps)
    loaded = schema.load_ledger(con, cutoff_ns=ledger.cutoff(now), bucket_ns=BUCKET_NS)
    ledger.load(
        now,
        low_water=loaded.low_water,
        expired=loaded.expired,
        ranges=loaded.ranges,
        buckets=loaded.buckets,
    )
    con.close()
    return ledger


@given(
    commits=st.lists(
        st.tuples(
            st.sampled_from(["a", "b"]),
            st.integers(1, 60),
            st.integers(0, 3 * 24 * 60),  # commit minute within three days
        ),
        max_size=80,
    ),
    now_minute=st.integers(0, 4 * 24 * 60),
    max_gaps=st.sampled_from([2, 3, 1000]),
)
@settings(max_examples=60, deadline=None)
def test_rebuilt_from_the_table_never_forgets_an_applied_batch(
    commits: list[tuple[str, int, int]], now_minute: int, max_gaps: int
) -> None:
    """Across a restart nothing applied becomes new (no duplicates), nothing new is lost.

    Gaps given up only because of the gap bound may be open again after the restart (the
    table does not say they were given up); gaps given up by age are given up again.
    """
    live = Ledger(retention_ns=DAY, max_gaps=max_gaps)
    rows = []
    for edge, seq, minute in sorted(commits, key=lambda c: c[2]):
        if live.seen(edge, seq):
            continue
        committed_at = T0 + minute * MINUTE + 17
        live.record(committed_at, [(edge, seq, 1)])
        rows.append((edge, seq, committed_at))
    now = T0 + now_minute * MINUTE
    live.expire(now)
    rebuilt = _table_ledger(rows, now, max_gaps=max_gaps)
    for edge in ("a", "b"):
        applied = {seq for e, seq, _ in rows if e == edge}
        live_seen = {s for s in range(1, 70) if live.seen(edge, s)}
        rebuilt_seen = {s for s in range(1, 70) if rebuilt.seen(edge, s)}
        assert applied <= rebuilt_seen <= live_seen
        if max_gaps == 1000:  # no gap given up for the bound: the same answers exactly
            assert rebuilt_seen == live_seen
