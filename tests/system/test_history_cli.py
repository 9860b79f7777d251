"""`shopfloor export / import / backup / restore` as a user runs them: real processes.

The history is seeded and read back through the historian in this process (while no
command runs); expected values come from the arrays the test wrote, and for local times
from Python's zoneinfo.
"""

from __future__ import annotations

import asyncio
import csv
import subprocess
import sys
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import duckdb
import numpy as np
import pyarrow.parquet as pq
import pytest

from shopfloor.model import PointBatch
from shopfloor.server.historian.duckdb import DuckDBHistorian

pytestmark = pytest.mark.system

SECOND = 10**9
T0 = 1_718_000_000 * SECOND
END = 2**63 - 1
BERLIN = ZoneInfo("Europe/Berlin")


def shopfloor(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "shopfloor", *map(str, args)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
        check=False,
    )


def site(tmp_path: Path, name: str) -> tuple[Path, Path]:
    """A configuration file and the historian file it names."""
    folder = tmp_path / name
    folder.mkdir()
    config = folder / "shopfloor.toml"
    config.write_text('[server]\ndata_dir = "data"\n')
    return config, folder / "data" / "history.duckdb"


def seed(db: Path) -> PointBatch:
    rng = np.random.default_rng(5)
    n = 3000
    ts = T0 + np.arange(n, dtype=np.int64) * SECOND + rng.integers(0, 10**6, n)
    batch = PointBatch.from_columns(
        ["plant/l1/temp", "plant/l1/flow", "plant/l2/temp"],
        np.arange(n) % 3,
        ts,
        rng.normal(size=n),
    )

    async def write() -> None:
        h = DuckDBHistorian(db)
        await h.start()
        try:
            await h.write(batch)
            await h.flush()
        finally:
            await h.close()

    asyncio.run(write())
    return batch


def read(db: Path, path: str) -> tuple[np.ndarray, np.ndarray]:
    async def go() -> tuple[np.ndarray, np.ndarray]:
        h = DuckDBHistorian(db)
        await h.start()
        try:
            t = await h.read_raw(path, 0, END, limit=10**6)
        finally:
            await h.close()
        return t.column("ts").cast("int64").to_numpy(), t.column("value").to_numpy()

    return asyncio.run(go())


def tags_of(db: Path) -> list[str]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return sorted(r[0] for r in con.execute("SELECT path FROM tags").fetchall())
    finally:
        con.close()


def ns(local: str) -> int:
    """A Berlin wall-clock time in UTC nanoseconds, by Python's zoneinfo."""
    moment = datetime.fromisoformat(local).replace(tzinfo=BERLIN)
    return int(moment.timestamp()) * SECOND


def test_export_and_import_through_the_cli(tmp_path: Path) -> None:
    config, db = site(tmp_path, "old")
    written = seed(db)
    done = shopfloor("export", "-c", config, "--tags", "plant/l1", "--out", "l1.csv", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "exported 2,000 points of 2 tag(s)" in done.stdout
    done = shopfloor(
        "export", "-c", config, "--tags", "plant/*/temp,plant/l1/flow", "--out", "all.parquet",
        "--start", "2024-06-10 08:13:20", "--tz", "Europe/Berlin", cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    table = pq.read_table(tmp_path / "all.parquet")
    start = ns("2024-06-10T08:13:20")
    assert table.num_rows == int((written.ts >= start).sum())

    new_config, new_db = site(tmp_path, "new")
    done = shopfloor("import", tmp_path / "l1.csv", "-c", new_config, cwd=tmp_path)
    assert done.returncode == 1
    assert "unknown tag 'plant/l1/flow' (import with --create-tags" in done.stderr
    done = shopfloor("import", tmp_path / "l1.csv", "-c", new_config, "--create-tags", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "imported 2,000 points of 2 tag(s)" in done.stdout
    for path in ("plant/l1/temp", "plant/l1/flow"):
        mask = written.paths() == path
        ts, value = read(new_db, path)
        np.testing.assert_array_equal(ts, written.ts[mask])
        np.testing.assert_array_equal(value, written.value[mask])
    again = shopfloor(
        "import", tmp_path / "l1.csv", "-c", new_config, "--create-tags", cwd=tmp_path
    )
    assert again.returncode == 0
    assert "imported before (same content): nothing stored" in again.stdout
    assert len(read(new_db, "plant/l1/temp")[0]) == int((written.paths() == "plant/l1/temp").sum())


def legacy_file(path: Path) -> None:
    """A wide export in local time, as a spreadsheet writes it, with five problems."""
    rows = [
        ["Zeit", "plant/a", "plant/b", "plant/nope"],
        ["2024-03-31 01:00:00", "1,5", "10", ""],  # 2 ok
        ["2024-03-31 01:30:00", "2,5", "#NV", ""],  # 3 non-numeric
        ["2024-03-31 02:30:00", "3", "30", ""],  # 4 does not exist in Berlin
        ["2024-03-31 03:00:00", "4", "40", "7"],  # 5 unknown column's value
        ["31.03.2024 04:00", "5", "50", ""],  # 6 not ISO 8601
        ["2024-10-27 02:30:00", "6", "60", ""],  # 7 happens twice in Berlin
        ["2024-03-31 05:00:00", "7"],  # 8 a field missing
        ["2024-03-31 01:00:00", "1,5", "", ""],  # 9 repeats line 2 for plant/a
    ]
    with path.open("w", newline="", encoding="utf-8") as f:
        csv.writer(f, delimiter=";").writerows(rows)


def test_import_checks_every_row_and_stores_all_or_nothing(tmp_path: Path) -> None:
    config, db = site(tmp_path, "site")
    asyncio.run(_register(db, ["plant/a", "plant/b"]))
    file = tmp_path / "legacy.csv"
    legacy_file(file)
    args = ["import", file, "-c", config, "--tz", "Europe/Berlin", "--delimiter", ";"]
    args += ["--decimal-comma", "--report", tmp_path / "report.csv"]
    done = shopfloor(*args, cwd=tmp_path)
    assert done.returncode == 1, done.stdout
    assert "nothing was stored" in done.stderr
    with (tmp_path / "report.csv").open() as f:
        report = [(int(r["line"]), r["column"], r["reason"]) for r in csv.DictReader(f)]
    assert [(line, column) for line, column, _ in report] == [
        (1, "plant/nope"), (3, "plant/b"), (4, "Zeit"), (6, "Zeit"), (7, "Zeit"), (8, ""),
        (9, "plant/a"),
    ]  # fmt: skip
    reasons = dict(((line, column), reason) for line, column, reason in report)
    assert "does not exist in Europe/Berlin" in reasons[(4, "Zeit")]
    assert "happens twice in Europe/Berlin" in reasons[(7, "Zeit")]
    assert reasons[(3, "plant/b")] == "non-numeric value '#NV'"
    assert reasons[(8, "")] == "expected 4 fields, found 2"
    assert reasons[(9, "plant/a")] == "repeats line 2 (same tag, time and value)"
    assert "line 4, column Zeit: bad timestamp '2024-03-31 02:30:00'" in done.stderr
    assert read(db, "plant/a")[0].size == 0  # all or nothing: nothing

    done = shopfloor(*args, "--skip-invalid", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    a_ts, a_value = read(db, "plant/a")
    b_ts, b_value = read(db, "plant/b")
    # lines 2, 3 and 5 have good times; plant/b's cell on line 3 was refused
    hours = [ns("2024-03-31T01:00:00"), ns("2024-03-31T01:30:00"), ns("2024-03-31T03:00:00")]
    np.testing.assert_array_equal(a_ts, hours)
    np.testing.assert_array_equal(a_value, [1.5, 2.5, 4.0])
    np.testing.assert_array_equal(b_ts, [hours[0], hours[2]])
    np.testing.assert_array_equal(b_value, [10.0, 40.0])
    assert tags_of(db) == ["plant/a", "plant/b"]  # no tag made from an unknown column
    again = shopfloor(*args, "--skip-invalid", cwd=tmp_path)
    assert again.returncode == 0
    assert "nothing stored" in again.stdout
    assert read(db, "plant/a")[0].size == 3


async def _register(db: Path, paths: list[str]) -> None:
    from shopfloor.model import TagMeta

    h = DuckDBHistorian(db)
    await h.start()
    try:
        await h.register_tags([TagMeta(p) for p in paths])
    finally:
        await h.close()


def test_a_duplicate_header_refuses_the_file_even_when_skipping(tmp_path: Path) -> None:
    config, _db = site(tmp_path, "site")
    file = tmp_path / "dup.csv"
    file.write_text("ts,plant/a,plant/a\n2024-01-01T00:00:00Z,1,2\n")
    done = shopfloor("import", file, "-c", config, "--create-tags", "--skip-invalid", cwd=tmp_path)
    assert done.returncode == 1
    assert "line 1, column plant/a: duplicate column name (columns 2 and 3)" in done.stderr


def test_backup_restore_and_a_tampered_backup_through_the_cli(tmp_path: Path) -> None:
    config, db = site(tmp_path, "site")
    written = seed(db)
    done = shopfloor("backup", "-c", config, "--out", "bk", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "3 tags, 3,000 points" in done.stdout
    refused = shopfloor("restore", "bk", "-c", config, cwd=tmp_path)
    assert refused.returncode == 1
    assert "already holds history" in refused.stderr

    db.unlink()  # the disk is lost
    points = tmp_path / "bk" / "history" / "points.parquet"
    original = points.read_bytes()
    points.write_bytes(original[:-1] + bytes([original[-1] ^ 1]))
    tampered = shopfloor("restore", "bk", "-c", config, cwd=tmp_path)
    assert tampered.returncode == 3
    assert "changed: history/points.parquet" in tampered.stderr
    assert not db.exists()
    points.write_bytes(original)
    check = shopfloor("restore", "bk", "-c", config, "--check", cwd=tmp_path)
    assert check.returncode == 0, check.stderr
    assert "the target is free to restore into" in check.stdout
    done = shopfloor("restore", "bk", "-c", config, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    for path in set(written.tags):
        ts, value = read(db, path)
        mask = written.paths() == path
        np.testing.assert_array_equal(ts, written.ts[mask])
        np.testing.assert_array_equal(value, written.value[mask])


def test_commands_say_when_the_server_is_running(tmp_path: Path) -> None:
    config, db = site(tmp_path, "site")
    seed(db)

    async def while_open() -> list[subprocess.CompletedProcess[str]]:
        h = DuckDBHistorian(db)  # as the server holds it
        await h.start()
        try:
            return [
                await asyncio.to_thread(shopfloor, *args, cwd=tmp_path)
                for args in (
                    ("export", "-c", config, "--tags", "plant", "--out", "x.csv"),
                    ("backup", "-c", config, "--out", "bk"),
                    ("restore", "bk", "-c", config),
                )
            ]
        finally:
            await h.close()

    export, backup, restore = asyncio.run(while_open())
    for done in (export, backup):
        assert done.returncode == 1
        assert "the server is running" in done.stderr, done.stderr
        assert "stop it" in done.stderr
    assert restore.returncode == 3  # no backup was made: there is nothing to restore
    assert not (tmp_path / "x.csv").exists()
    assert not (tmp_path / "bk").exists()
