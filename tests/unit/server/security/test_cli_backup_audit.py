"""`shopfloor backup` and `shopfloor restore` enter what they did, or why they did not, in
the data folder's audit log: who ran them, the folder, the manifest's digest and size."""

from __future__ import annotations

import asyncio
import getpass
import hashlib
from pathlib import Path

from typer.testing import CliRunner

from shopfloor.cli import app
from shopfloor.model import PointBatch
from shopfloor.server.historian.duckdb import DuckDBHistorian
from shopfloor.server.security.audit import AuditEntry, AuditStore

S = 10**9


async def _seed(db: Path) -> None:
    h = DuckDBHistorian(db)
    await h.start()
    try:
        await h.write(
            PointBatch.from_points([("plant/l1/temp", i * S, float(i), 0) for i in range(50)])
        )
        await h.flush()
    finally:
        await h.close()


def _entries(data: Path) -> list[AuditEntry]:
    store = AuditStore(data / "audit.sqlite")
    try:
        assert store.verify().broken_seq is None
        return store.entries()
    finally:
        store.close()


def test_backup_and_restore_are_audited_done_refused_and_tampered(tmp_path: Path) -> None:
    config = tmp_path / "shopfloor.toml"
    config.write_text('[server]\ndata_dir = "data"\n')
    data = tmp_path / "data"
    asyncio.run(_seed(data / "history.duckdb"))  # the CLI runs its own loop: no async test
    out = tmp_path / "bk"
    runner = CliRunner()

    def run(*args: str | Path) -> int:
        return runner.invoke(app, [str(a) for a in args]).exit_code

    assert run("backup", "-c", config, "--out", out) == 0
    digest = hashlib.sha256((out / "manifest.json").read_bytes()).hexdigest()
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    assert run("backup", "-c", config, "--out", out) == 1  # not a new folder
    assert run("restore", out, "-c", config) == 1  # the history is there
    assert run("restore", out, "-c", config, "--check", "--force") == 0  # changes nothing
    assert run("restore", out, "-c", config, "--force") == 0
    (out / "config" / "shopfloor.toml").write_text("# edited\n")
    assert run("restore", out, "-c", config, "--force") == 3

    entries = _entries(data)
    assert [(e.action, e.outcome.value) for e in entries] == [
        ("backup.created", "ok"),
        ("backup.created", "rejected"),
        ("restore.done", "rejected"),
        ("restore.done", "ok"),
        ("restore.done", "rejected"),
    ]
    assert {e.user for e in entries} == {f"cli:{getpass.getuser()}"}
    assert {e.target for e in entries} == {str(out)}
    made, not_new, exists, restored, tampered = entries
    assert made.detail["manifest_sha256"] == digest
    assert made.detail["size_bytes"] == size
    assert made.detail["backend"] == "duckdb"
    assert made.detail["config"] == str(config)
    assert made.detail["tables"]["tags"] == 1
    assert "not an empty folder" in not_new.detail["error"]
    assert "already holds history" in exists.detail["error"]
    assert restored.detail["manifest_sha256"] == digest
    assert restored.detail["force"] is True
    assert restored.detail["kept_as"]
    assert "changed: config/shopfloor.toml" in tampered.detail["error"]
