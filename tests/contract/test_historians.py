"""The historian contract (shopfloor.testing.historian_contract) over every backend.

Each backend is one subclass of the suite with its own ``store`` fixture; the PostgreSQL
one depends on the session's throwaway server and gets a new, empty database per test.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from shopfloor.testing.historian_contract import DuckDBStore, HistorianContract, PostgresStore
from shopfloor.testing.postgres import PostgresServer


class TestDuckDB(HistorianContract):
    @pytest.fixture
    def store(self, tmp_path: Path) -> DuckDBStore:
        return DuckDBStore(tmp_path / "nested" / "historian.duckdb")


class TestPostgres(HistorianContract):
    @pytest.fixture
    def store(self, postgres_server: PostgresServer) -> Iterator[PostgresStore]:
        dsn = postgres_server.create_database()
        yield PostgresStore(dsn)
        postgres_server.drop_database(dsn.rsplit("dbname=", 1)[1])
