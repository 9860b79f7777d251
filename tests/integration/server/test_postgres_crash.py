"""A shopfloor process killed with SIGKILL: what it flushed to PostgreSQL stays, its lock goes."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
import time

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from shopfloor.errors import HistorianError
from shopfloor.model import PointBatch
from shopfloor.server.historian.postgres import PostgresHistorian

_CHILD = textwrap.dedent(
    """
    import asyncio, sys
    import numpy as np
    from shopfloor.model import PointBatch
    from shopfloor.server.historian.postgres import PostgresHistorian

    async def main():
        h = PostgresHistorian(sys.argv[1], flush_interval_s=3600, flush_rows=10**9)
        await h.start()
        n = 5000
        ts = 10**18 + np.arange(n)
        await h.write(PointBatch.from_columns(["t/a", "t/b"], ts % 2, ts, ts % 997))
        await h.flush()
        receipt = await h.write_acknowledged(
            PointBatch.from_columns(["t/c"], [0], [10**18], [7.0]), edge="e", seq=1
        )
        assert not receipt.duplicate
        await h.write(PointBatch.from_columns(["t/a"], [0], [2 * 10**18], [-1.0]))
        print("flushed", flush=True)
        await asyncio.sleep(3600)

    asyncio.run(main())
    """
)


def ints(column: pa.ChunkedArray) -> npt.NDArray[np.int64]:
    return np.asarray(column.cast(pa.int64()).to_numpy())


def test_flushed_points_survive_sigkill_and_the_writer_lock_is_released(dsn: str) -> None:
    child = subprocess.Popen([sys.executable, "-c", _CHILD, dsn], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "flushed"
    finally:
        child.kill()  # SIGKILL: no close, no last commit
        child.wait()
        if child.stdout is not None:
            child.stdout.close()

    async def check() -> None:
        # the server notices the dead client's closed socket and ends its session, and
        # with it the writer lock; that takes a moment
        deadline = time.monotonic() + 10
        while True:
            h = PostgresHistorian(dsn)
            try:
                await h.start()
                break
            except HistorianError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.05)
        try:
            ts = 10**18 + np.arange(5000)
            a = await h.read_raw("t/a", 0, 3 * 10**18, limit=10**6)
            np.testing.assert_array_equal(ints(a.column("ts")), ts[ts % 2 == 0])
            np.testing.assert_array_equal(a.column("value").to_numpy(), (ts % 997)[ts % 2 == 0])
            latest = await h.latest(["t/a", "t/b"])
            assert ints(latest.column("ts")).tolist() == [int(ts[-2]), int(ts[-1])]
            again = PointBatch.from_columns(["t/c"], [0], [10**18], [7.0])
            resent = await h.write_acknowledged(again, edge="e", seq=1)
            assert resent.duplicate  # acknowledged before the kill: stored once
        finally:
            await h.close()

    asyncio.run(check())
