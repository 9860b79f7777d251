"""Backup, wipe, restore on both backends; tampered backups and occupied targets refused.

Tables are compared as read straight from storage (every row of every table) before the
backup and after the restore, and the history is read back through a new historian.
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

from shopfloor.model import DataType, PointBatch, Quality, TagMeta
from shopfloor.server.historian.backup import BackupInvalid, HistoryExists
from shopfloor.server.historian.backup_jobs import make_backup, restore_backup
from shopfloor.server.historian.offline import ServerRunning
from shopfloor.testing.postgres import PostgresServer

from .history_backends import Backend

SECOND = 10**9
DAY = 86_400 * SECOND
T0 = 1_718_000_000 * SECOND + 7
END = 2**63 - 1


def history() -> list[PointBatch]:
    """Points over three days (three PostgreSQL partitions), with text and Bad qualities."""
    rng = np.random.default_rng(11)
    batches = []
    for day in range(3):
        n = 500
        ts = T0 + day * DAY + np.sort(rng.integers(0, DAY, n))
        quality = np.where(rng.random(n) < 0.05, int(Quality.BAD_COMMUNICATION_ERROR), 0)
        batches.append(
            PointBatch.from_columns(
                ["plant/a/temp", "plant/a/flow"],
                rng.integers(0, 2, n),
                ts,
                rng.normal(size=n),
                quality,
            )
        )
    batches.append(PointBatch.from_points([("plant/a/mode", T0 + 5, "run", 0)]))
    return batches


async def fill(backend: Backend) -> PointBatch:
    """Write the history (plain and acknowledged writes); return every point written."""
    batches = history()
    h = backend.historian()
    await h.start()
    try:
        await h.register_tags([TagMeta("plant/a/mode", data_type=DataType.STRING, unit="")])
        await h.register_tags([TagMeta("plant/a/temp", unit="degC", description="oven")])
        for seq, batch in enumerate(batches, start=1):
            if seq % 2:
                await h.write(batch)
            else:
                await h.write_acknowledged(batch, edge="edge-1", seq=seq)
        await h.flush()
    finally:
        await h.close()
    return PointBatch.concat(batches)


async def check_reads(backend: Backend, written: PointBatch) -> None:
    """Every tag reads back what was written (sorted, compared with numpy)."""
    h = backend.historian()
    await h.start()
    try:
        assert [m.path for m in await h.tags()] == sorted(set(written.tags))
        assert {m.path: m.unit for m in await h.tags()}["plant/a/temp"] == "degC"
        for path in set(written.tags):
            mask = written.paths() == path
            table = await h.read_raw(path, 0, END, limit=10**6)
            got_ts = table.column("ts").cast("int64").to_numpy()
            order = np.argsort(written.ts[mask], kind="stable")
            np.testing.assert_array_equal(got_ts, written.ts[mask][order])
            np.testing.assert_array_equal(
                table.column("value").to_numpy(), written.value[mask][order]
            )
            np.testing.assert_array_equal(
                table.column("quality").to_numpy(), written.quality[mask][order]
            )
        # the ingest ledger came back too: an edge's batch sent again is a duplicate
        again = await h.write_acknowledged(history()[1], edge="edge-1", seq=2)
        assert again.duplicate
    finally:
        await h.close()


def config_file(tmp_path: Path, backend: Backend) -> Path:
    config = tmp_path / "etc" / "shopfloor.toml"
    config.parent.mkdir(parents=True, exist_ok=True)
    (config.parent / "tags.csv").write_text("name,address\n")
    config.write_text(f'[server]\ndata_dir = "{tmp_path / "data"}"\n\n{backend.config_section()}')
    return config


class BackupSuite:
    async def test_backup_wipe_restore_gives_identical_tables_and_reads(
        self, backend: Backend, tmp_path: Path
    ) -> None:
        written = await fill(backend)
        before = backend.tables()
        config = config_file(tmp_path, backend)
        out = tmp_path / "backup"
        manifest = make_backup(backend.target, config=config, out=out)
        assert manifest.tables == {name: len(rows) for name, rows in before.items()}
        listed = json.loads((out / "manifest.json").read_text())
        assert listed["backend"] == backend.kind
        assert "config/shopfloor.toml" in {f["path"] for f in listed["files"]}

        backend.wipe()
        result = restore_backup(out, backend.target, config=config, force=False)
        assert result.kept_as is None
        assert not result.config_differs
        assert backend.tables() == before
        await check_reads(backend, written)

    async def test_a_changed_missing_or_extra_file_refuses_the_backup(
        self, backend: Backend, tmp_path: Path
    ) -> None:
        await fill(backend)
        config = config_file(tmp_path, backend)
        out = tmp_path / "backup"
        make_backup(backend.target, config=config, out=out)
        backend.wipe()
        history_file = max((out / "history").iterdir(), key=lambda p: p.stat().st_size)
        original = history_file.read_bytes()

        def refused(match: str) -> None:
            with pytest.raises(BackupInvalid, match=match):
                restore_backup(out, backend.target, config=config, force=True)

        changed = bytearray(original)
        changed[len(changed) // 2] ^= 0x01
        history_file.write_bytes(bytes(changed))
        refused(f"changed: history/{history_file.name}")
        history_file.unlink()
        refused(f"missing: history/{history_file.name}")
        history_file.write_bytes(original)
        (out / "history" / "more.parquet").write_bytes(b"x")
        refused("extra, not in the manifest: history/more.parquet")
        (out / "history" / "more.parquet").unlink()
        (out / "manifest.json").write_text("{")
        refused("manifest.json is damaged")
        # nothing was restored by any of them
        if backend.kind == "duckdb":
            assert backend.path is not None
            assert not backend.path.exists()

    async def test_existing_history_is_kept_unless_forced(
        self, backend: Backend, tmp_path: Path
    ) -> None:
        await fill(backend)
        before = backend.tables()
        config = config_file(tmp_path, backend)
        out = tmp_path / "backup"
        make_backup(backend.target, config=config, out=out)
        h = backend.historian()  # history written after the backup, on a new day
        await h.start()
        try:
            await h.write(PointBatch.from_points([("plant/b/new", T0 + 20 * DAY, 1.0, 0)]))
            await h.flush()
        finally:
            await h.close()
        with pytest.raises(HistoryExists, match="already holds history"):
            restore_backup(out, backend.target, config=config, force=False)
        assert backend.tables() != before
        result = restore_backup(out, backend.target, config=config, force=True)
        assert result.kept_as is not None
        assert result.replaced["tags"] == len(before["tags"]) + 1
        assert backend.tables() == before


class TestDuckDB(BackupSuite):
    @pytest.fixture
    def backend(self, tmp_path: Path) -> Backend:
        return Backend("duckdb", path=tmp_path / "data" / "history.duckdb")

    def test_a_running_server_is_named(self, backend: Backend, tmp_path: Path) -> None:
        asyncio.run(fill(backend))
        config = config_file(tmp_path, backend)
        holder = subprocess.Popen(  # another process holds the file, as a running server does
            [
                sys.executable,
                "-c",
                "import duckdb, sys; c = duckdb.connect(sys.argv[1]); print('open', flush=True); "
                "sys.stdin.read()",
                str(backend.path),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert holder.stdout is not None
            assert holder.stdout.readline().strip() == "open"
            with pytest.raises(
                ServerRunning, match=rf"the server is running: process {holder.pid}"
            ):
                make_backup(backend.target, config=config, out=tmp_path / "backup")
            assert not (tmp_path / "backup").exists()
        finally:
            holder.communicate("", timeout=30)


class TestPostgres(BackupSuite):
    @pytest.fixture
    def backend(self, postgres_server: PostgresServer) -> Iterator[Backend]:
        dsn = postgres_server.create_database()
        yield Backend("postgres", dsn=dsn)
        postgres_server.drop_database(dsn.rsplit("dbname=", 1)[1])

    async def test_backup_while_running_restore_refused_while_running(
        self, backend: Backend, tmp_path: Path
    ) -> None:
        await fill(backend)
        config = config_file(tmp_path, backend)
        h = backend.historian()
        await h.start()
        try:
            # pg_dump reads a snapshot: the server may keep running during a backup
            counts = {name: len(rows) for name, rows in backend.tables().items()}
            manifest = make_backup(backend.target, config=config, out=tmp_path / "backup")
            assert manifest.tables == counts
            with pytest.raises(ServerRunning, match="the server is running"):
                restore_backup(tmp_path / "backup", backend.target, config=config, force=True)
            export = await asyncio.to_thread(
                subprocess.run,
                [sys.executable, "-m", "shopfloor", "export", "-c", str(config), "--tags",
                 "plant", "--out", str(tmp_path / "x.csv")],
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
            )  # fmt: skip
            assert export.returncode == 1
            assert "the server is running: it writes to schema shopfloor" in export.stderr
        finally:
            await h.close()

    async def test_cli_backup_wipe_restore_with_a_postgres_configuration(
        self, backend: Backend, tmp_path: Path
    ) -> None:
        await fill(backend)
        before = backend.tables()
        config = config_file(tmp_path, backend)

        async def shopfloor(*args: str | Path) -> subprocess.CompletedProcess[str]:
            return await asyncio.to_thread(
                subprocess.run,
                [sys.executable, "-m", "shopfloor", *map(str, args)],
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
            )

        done = await shopfloor("backup", "-c", config, "--out", tmp_path / "bk")
        assert done.returncode == 0, done.stderr
        assert "(postgres)" in done.stdout
        backend.wipe()
        dump = tmp_path / "bk" / "history" / "historian.pgdump"
        original = dump.read_bytes()
        dump.write_bytes(original + b"\0")
        tampered = await shopfloor("restore", tmp_path / "bk", "-c", config)
        assert tampered.returncode == 3
        assert "changed: history/historian.pgdump" in tampered.stderr
        dump.write_bytes(original)
        done = await shopfloor("restore", tmp_path / "bk", "-c", config)
        assert done.returncode == 0, done.stderr
        assert backend.tables() == before
