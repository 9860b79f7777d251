"""`shopfloor server` with `[historian] kind = "postgres"`, as a real process.

The throwaway PostgreSQL trusts every local login, so this test gives its own role a
password and puts a ``scram-sha-256`` rule for that role and database at the top of
``pg_hba.conf``: the password from the environment variable is then really checked.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import psycopg
import pytest
from psycopg import sql

from shopfloor.model import PointBatch, Quality, now_ns
from shopfloor.testing.postgres import PostgresServer
from shopfloor.testing.processes import free_port, shopfloor_process
from shopfloor.wire import ARROW_MEDIA_TYPE, encode_arrow

pytestmark = pytest.mark.system

SEC = 10**9
MS = 10**6
ROLE = "shopfloor_e2e"
PASSWORD = "e2e-Pa55 'word'"
PASSWORD_ENV = "SHOPFLOOR_E2E_DB_PASSWORD"
TAGS = ["acme/p1/line-1/oven/temp", "acme/p1/line-1/oven/power"]


@dataclass
class Database:
    server: PostgresServer
    name: str

    def admin_dsn(self) -> str:
        return self.server.dsn(self.name)


@pytest.fixture
def database(postgres_server: PostgresServer) -> Iterator[Database]:
    """A database owned by a role that must log in with a password."""
    name = "shopfloor_e2e"
    hba = postgres_server.data_dir / "pg_hba.conf"
    original = hba.read_text()
    with psycopg.connect(postgres_server.dsn(), autocommit=True) as con:
        con.execute(
            sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                sql.Identifier(ROLE), sql.Literal(PASSWORD)
            )
        )
        con.execute(
            sql.SQL("CREATE DATABASE {} OWNER {} TEMPLATE template0").format(
                sql.Identifier(name), sql.Identifier(ROLE)
            )
        )
        hba.write_text(f"host {name} {ROLE} 127.0.0.1/32 scram-sha-256\n{original}")
        con.execute("SELECT pg_reload_conf()")
    try:
        yield Database(postgres_server, name)
    finally:
        hba.write_text(original)
        with psycopg.connect(postgres_server.dsn(), autocommit=True) as con:
            con.execute("SELECT pg_reload_conf()")
            con.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))
            con.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(ROLE)))


def write_config(workdir: Path, database: Database, port: int) -> None:
    pg = database.server
    (workdir / "server.toml").write_text(
        f'[server]\nport = {port}\ndata_dir = "data"\n\n'
        f'[historian]\nkind = "postgres"\nhost = "{pg.host}"\nport = {pg.port}\n'
        f'dbname = "{database.name}"\nuser = "{ROLE}"\npassword_env = "{PASSWORD_ENV}"\n'
        'sslmode = "disable"\nflush_interval_s = 0.1\n'
    )


def test_the_password_rule_is_really_enforced(database: Database) -> None:
    login = f"host={database.server.host} port={database.server.port} dbname={database.name}"
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(f"{login} user={ROLE} password=wrong", connect_timeout=5).close()
    psycopg.connect(f"{login} user={ROLE}", password=PASSWORD, connect_timeout=5).close()


def test_server_process_stores_in_postgres_and_serves_it_back(
    database: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    port = free_port()
    write_config(tmp_path, database, port)
    monkeypatch.setenv(PASSWORD_ENV, PASSWORD)
    t0 = (now_ns() - 3600 * SEC) // (60 * SEC) * (60 * SEC)
    ts = t0 + np.arange(300, dtype=np.int64) * SEC
    rng = np.random.default_rng(3)
    values = {tag: np.round(rng.normal(100 * (i + 1), 4, len(ts)), 3) for i, tag in enumerate(TAGS)}
    quality = np.where(np.arange(len(ts)) % 9 == 4, Quality.BAD, Quality.GOOD).astype(np.uint32)
    batch = PointBatch.from_columns(
        TAGS,
        np.repeat([0, 1], len(ts)),
        np.concatenate([ts, ts]),
        np.concatenate([values[TAGS[0]], values[TAGS[1]]]),
        np.concatenate([quality, quality]),
    )
    with (
        shopfloor_process(
            ["server", "--config", "server.toml"], port=port, workdir=tmp_path
        ) as run,
        httpx.Client(base_url=run.base_url, timeout=30, headers=run.headers) as http,
    ):
        answer = http.post(
            "/api/v1/ingest",
            content=encode_arrow(batch, edge="e2e", seq=1),
            headers={"content-type": ARROW_MEDIA_TYPE},
        )
        assert answer.status_code == 200, answer.text
        assert answer.json()["accepted"] == 2 * len(ts)

        series = http.get(
            f"/api/v1/tags/{TAGS[0]}/series",
            params={"start": "-2h", "end": "now", "limit": 10_000},
        )
        assert series.status_code == 200, series.text
        np.testing.assert_array_equal(series.json()["columns"]["value"], values[TAGS[0]])
        np.testing.assert_array_equal(series.json()["columns"]["quality"], quality)

        # many tags at once, times in epoch ms as Grafana sends them
        minute = 60_000
        rows = http.get(
            "/api/v1/history",
            params={
                "tags": ",".join(TAGS),
                "from": str(t0 // MS),
                "to": str((t0 + 300 * SEC) // MS),
                "interval_ms": str(minute),
                "agg": "avg,count",
                "time_format": "ms",
            },
        ).json()
        good = quality == Quality.GOOD
        want = []
        for b in range(5):
            mine = good & (ts >= t0 + b * minute * MS) & (ts < t0 + (b + 1) * minute * MS)
            for tag in TAGS:
                want.append((t0 // MS + b * minute, tag, values[tag][mine].mean(), int(mine.sum())))
        assert [(r["time"], r["path"]) for r in rows] == [w[:2] for w in want]
        for row, (_, _, avg, count) in zip(rows, want, strict=True):
            assert row["avg"] == pytest.approx(avg, rel=1e-12)
            assert row["count"] == count

        health = http.get("/healthz").json()
        assert health["historian"]["points_written"] == 2 * len(ts)
        code = run.stop()
        log = run.log()
    assert code == 0, log
    assert PASSWORD not in log
    # the points are in PostgreSQL itself, not in a DuckDB file
    with psycopg.connect(database.admin_dsn()) as con:
        row = con.execute("SELECT count(*) FROM shopfloor.points").fetchone()
    assert row is not None
    assert row[0] == 2 * len(ts)
    assert not list((tmp_path / "data").glob("*.duckdb"))


def test_unset_password_variable_stops_the_server_with_exit_2(
    database: Database, tmp_path: Path
) -> None:
    write_config(tmp_path, database, free_port())
    env = {k: v for k, v in os.environ.items() if k != PASSWORD_ENV}
    done = subprocess.run(
        [sys.executable, "-m", "shopfloor", "server", "--config", "server.toml"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert f"environment variable {PASSWORD_ENV} is not set" in " ".join(done.stderr.split())


def test_wrong_password_stops_the_server_with_a_clear_error(
    database: Database, tmp_path: Path
) -> None:
    write_config(tmp_path, database, free_port())
    env = {**os.environ, PASSWORD_ENV: "not-the-password"}
    done = subprocess.run(
        [sys.executable, "-m", "shopfloor", "server", "--config", "server.toml"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1, done.stderr
    message = " ".join(done.stderr.split())  # the console wraps long lines
    assert "cannot connect to the historian database" in message
    assert "password authentication failed" in message
    assert "not-the-password" not in message
