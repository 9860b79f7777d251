"""``shopfloor disk`` as a real process, on both backends (DuckDB with the server stopped).

Expected points, oldest and newest per tag come from the points written, not from the
code under test.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from shopfloor.model import PointBatch
from shopfloor.testing.postgres import PostgresServer

from .history_backends import Backend

SECOND = 10**9
DAY = 86_400 * SECOND
T0 = 1_718_000_000 * SECOND
TAGS = ["acme/p1/utilities/air/comp-1/pressure", "acme/p1/packing/line-2/robot/torque"]


async def shopfloor(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "shopfloor", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
    )


def ns_of(text: str) -> int:
    return int(np.datetime64(text.removesuffix("Z"), "ns").astype(int))


class DiskCommand:
    """The same assertions over each backend's ``backend`` fixture."""

    async def _fill(self, backend: Backend) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng(2)
        index = rng.integers(0, len(TAGS), 3000)
        ts = T0 + np.sort(rng.integers(0, 3 * DAY, 3000))
        h = backend.historian()
        await h.start()
        try:
            await h.write(PointBatch.from_columns(TAGS, index, ts, rng.normal(size=len(ts))))
            await h.flush()
        finally:
            await h.close()
        return index, ts

    def _config(self, backend: Backend, tmp_path: Path) -> Path:
        config = tmp_path / "shopfloor.toml"
        config.write_text(
            backend.config_section() + '\n[historian.retention]\nraw = "30d"\n', encoding="utf-8"
        )
        return config

    async def test_disk_reports_every_tag_against_the_points_written(
        self, backend: Backend, tmp_path: Path
    ) -> None:
        index, ts = await self._fill(backend)
        config = self._config(backend, tmp_path)
        done = await shopfloor("disk", "-c", config, "--group", "tag", "--json")
        assert done.returncode == 0, done.stderr
        answer = json.loads(done.stdout)
        got = {g["key"]: g for g in answer["groups"]}
        assert sorted(got) == sorted(TAGS)
        for i, tag in enumerate(TAGS):
            own = ts[index == i]
            assert got[tag]["points"] == len(own)
            assert ns_of(got[tag]["oldest"]) == int(own.min())
            assert ns_of(got[tag]["newest"]) == int(own.max())
        assert answer["retention"]["raw"] == "30d"
        table = await shopfloor("disk", "-c", config, "--group", "area", "--top", "1")
        assert table.returncode == 0, table.stderr
        assert "What uses the disk, per area" in table.stdout
        assert "… and 1 more" in table.stdout  # two areas, one shown

    async def test_bad_usage_exits_2(self, backend: Backend, tmp_path: Path) -> None:
        config = self._config(backend, tmp_path)
        wrong = await shopfloor("disk", "-c", config, "--group", "site")
        assert wrong.returncode == 2
        bad = tmp_path / "bad.toml"
        bad.write_text(
            backend.config_section() + '[historian.retention]\nraw = "6m"\n', encoding="utf-8"
        )
        refused = await shopfloor("disk", "-c", bad)
        assert refused.returncode == 2
        assert "historian.retention.raw (line" in refused.stderr
        assert "183d" in refused.stderr  # months are written as days


class TestDuckDB(DiskCommand):
    @pytest.fixture
    def backend(self, tmp_path: Path) -> Backend:
        return Backend("duckdb", path=tmp_path / "data" / "history.duckdb")

    def test_a_running_server_is_named(self, backend: Backend, tmp_path: Path) -> None:
        asyncio.run(self._fill(backend))
        config = self._config(backend, tmp_path)
        holder = subprocess.Popen(  # another process holds the file, as a running server does
            [
                sys.executable,
                "-c",
                "import duckdb, sys; con = duckdb.connect(sys.argv[1]); print('ok', flush=True); "
                "sys.stdin.read()",
                str(backend.path),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert holder.stdout is not None
            assert holder.stdout.readline().strip() == "ok"
            done = asyncio.run(shopfloor("disk", "-c", config))
        finally:
            holder.communicate("", timeout=30)
        assert done.returncode == 1
        assert "the server is running" in done.stderr


class TestPostgres(DiskCommand):
    @pytest.fixture
    def backend(self, postgres_server: PostgresServer) -> Iterator[Backend]:
        dsn = postgres_server.create_database()
        yield Backend("postgres", dsn=dsn)
        postgres_server.drop_database(dsn.rsplit("dbname=", 1)[1])
