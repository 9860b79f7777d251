"""SIGKILL the historian mid-commit, again and again: no half-applied batch, none twice."""

from __future__ import annotations

import random
import subprocess
import sys
import textwrap
from pathlib import Path

import duckdb

SEQS = 240
POINTS = 500

_CHILD = textwrap.dedent(
    f"""
    import asyncio, sys
    from pathlib import Path
    import numpy as np
    from shopfloor.model import PointBatch
    from shopfloor.server.historian.duckdb import DuckDBHistorian

    def batch(seq):
        ts = 1_764_000_000 * 10**9 + seq * 10**6 + np.arange({POINTS})
        return PointBatch.from_columns(
            ["t/a", "t/b"], np.arange({POINTS}) % 2, ts, np.full({POINTS}, float(seq))
        )

    async def send(h, seq):
        receipt = await h.write_acknowledged(batch(seq), edge="e", seq=seq)
        print(seq, int(receipt.duplicate), flush=True)

    async def main():
        h = DuckDBHistorian(Path(sys.argv[1]), flush_interval_s=60)
        await h.start()
        print("ready", flush=True)
        for first in range(1, {SEQS} + 1, 6):  # an edge replaying its outbox from seq 1
            await asyncio.gather(*(send(h, s) for s in range(first, min(first + 6, {SEQS} + 1))))
        print("done", flush=True)
        await h.close()

    asyncio.run(main())
    """
)


def _run(db: Path, *, kill_after: int | None) -> set[int]:
    """Run the child; SIGKILL it after ``kill_after`` answers. Returns the acknowledged seqs."""
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(db)], stdout=subprocess.PIPE, text=True
    )
    acked: set[int] = set()
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "ready"
        for line in child.stdout:
            if line.strip() == "done":
                break
            acked.add(int(line.split()[0]))
            if kill_after is not None and len(acked) >= kill_after:
                break
    finally:
        if kill_after is not None:
            child.kill()  # SIGKILL: the commit in flight dies with the process
        child.wait(timeout=60)
        if child.stdout is not None:
            child.stdout.close()
    return acked


def _check(db: Path) -> set[int]:
    """Every ledger row has all its points, every point has its ledger row; return seqs."""
    with duckdb.connect(str(db), read_only=True) as con:
        ledger = con.execute("SELECT seq, points FROM ingest_ledger").fetchall()
        per_value = dict(
            con.execute(
                "SELECT CAST(value AS BIGINT), count(*) FROM points GROUP BY ALL"
            ).fetchall()
        )
    seqs = [s for s, _ in ledger]
    assert len(seqs) == len(set(seqs)), "a batch is in the ledger twice"
    assert all(p == POINTS for _, p in ledger)
    assert per_value == {s: POINTS for s in seqs}, "points without a ledger row or the reverse"
    return set(seqs)


def test_sigkill_mid_commit_leaves_no_half_applied_batch_and_no_duplicate(
    tmp_path: Path,
) -> None:
    db = tmp_path / "history.duckdb"
    rng = random.Random(4)
    durable: set[int] = set()
    for _ in range(3):
        acked = _run(db, kill_after=rng.randint(len(durable) + 10, len(durable) + 60))
        stored = _check(db)
        assert acked <= stored, "an acknowledged batch was lost"
        assert durable <= stored
        durable = stored
    assert _run(db, kill_after=None) == set(range(1, SEQS + 1))
    assert _check(db) == set(range(1, SEQS + 1))
