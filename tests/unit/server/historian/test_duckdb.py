"""DuckDBHistorian: what only the embedded backend has (its writer thread, its file).

What every historian must do (reads, aggregates against numpy, latest values, tags, the
exactly-once ledger, failed commits, close) is checked for DuckDB and PostgreSQL alike by
the contract suite: shopfloor.testing.historian_contract, run in tests/contract/.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pytest

from shopfloor.errors import HistorianError, ShutdownError
from shopfloor.model import PointBatch, Quality
from shopfloor.server.historian.commit_plan import sort_order
from shopfloor.server.historian.duckdb import DuckDBHistorian

T0 = 1_700_000_000 * 10**9


def ts_ns(table: pa.Table, column: str = "ts") -> npt.NDArray[np.int64]:
    return np.asarray(table.column(column).cast(pa.int64()).to_numpy(), dtype=np.int64)


def writer_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("historian-")]


@pytest.fixture(autouse=True)
def no_leaked_threads() -> Iterator[None]:
    before = set(threading.enumerate())
    yield
    leaked = [t.name for t in threading.enumerate() if t not in before and t.is_alive()]
    assert leaked == []


@pytest.mark.parametrize("span", [10**9, 2**61], ids=["combined-key", "lexsort-fallback"])
def test_sort_order_is_stable_lexsort(span: int) -> None:
    rng = np.random.default_rng(11)
    tag_id = rng.integers(1, 50, 5000).astype(np.int32)
    ts = rng.integers(0, span, 5000, dtype=np.int64)
    ts[::7] = ts[1::7][: len(ts[::7])]  # duplicate timestamps: ties must keep input order
    tag_id[::7] = tag_id[1::7][: len(tag_id[::7])]
    np.testing.assert_array_equal(sort_order(tag_id, ts), np.lexsort((ts, tag_id)))


# ------------------------------------------------------------------------- lifecycle
async def test_write_after_close_raises_and_threads_are_joined() -> None:
    h = DuckDBHistorian(None)
    await h.start()
    await h.write(PointBatch.from_points([("a/b", T0, 1.0, Quality.GOOD)]))
    await h.flush()
    assert len(await h.read_raw("a/b", T0, T0 + 1)) == 1  # starts a reader thread
    thread = h.writer_thread
    assert thread is not None
    assert thread.is_alive()
    await h.close()
    assert not thread.is_alive()
    assert writer_threads() == []
    with pytest.raises(ShutdownError):
        await h.write(PointBatch.from_points([("a/b", T0 + 1, 2.0, Quality.GOOD)]))
    with pytest.raises(ShutdownError):
        await h.read_raw("a/b", T0, T0 + 1)
    await h.flush()  # nothing left to commit


async def test_unopenable_file_is_a_historian_error(tmp_path: Path) -> None:
    not_a_db = tmp_path / "garbage.duckdb"
    not_a_db.write_bytes(b"this is not a database" * 1000)
    h = DuckDBHistorian(not_a_db)
    with pytest.raises(HistorianError):
        await h.start()
    assert writer_threads() == []


# --------------------------------------------------------------------- crash safety
_CHILD = textwrap.dedent(
    """
    import asyncio, sys
    from pathlib import Path
    import numpy as np
    from shopfloor.model import PointBatch
    from shopfloor.server.historian.duckdb import DuckDBHistorian

    async def main():
        h = DuckDBHistorian(Path(sys.argv[1]), flush_interval_s=3600, flush_rows=10**9)
        await h.start()
        n = 5000
        ts = 10**18 + np.arange(n)
        await h.write(PointBatch.from_columns(["t/a", "t/b"], ts % 2, ts, ts % 997))
        await h.flush()
        await h.write(PointBatch.from_columns(["t/a"], [0], [2 * 10**18], [-1.0]))
        print("flushed", flush=True)
        await asyncio.sleep(3600)

    asyncio.run(main())
    """
)


def test_flushed_points_survive_sigkill(tmp_path: Path) -> None:
    db = tmp_path / "h.duckdb"
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(db)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "flushed"
    finally:
        child.kill()  # SIGKILL: no close, no checkpoint
        child.wait()
        if child.stdout is not None:
            child.stdout.close()

    async def check() -> None:
        h = DuckDBHistorian(db)
        await h.start()
        try:
            ts = 10**18 + np.arange(5000)
            a = await h.read_raw("t/a", 0, 3 * 10**18, limit=10**6)
            np.testing.assert_array_equal(ts_ns(a), ts[ts % 2 == 0])
            np.testing.assert_array_equal(a.column("value").to_numpy(), (ts % 997)[ts % 2 == 0])
            latest = await h.latest(["t/a", "t/b"])
            assert ts_ns(latest).tolist() == [int(ts[-2]), int(ts[-1])]
        finally:
            await h.close()

    asyncio.run(check())
