"""Fixtures of the contract suites: a throwaway PostgreSQL server for the whole session.

The server is session-scoped and requested as a static dependency of the fixtures that
need it, so pytest sets it up before any function-scoped fixture of the first test that
needs it, the suite's thread and process guard (tests/conftest.py) included: the guard's
snapshot already holds the server's process, and the server is stopped after the last
test. Tests of other backends never start it. Without the PostgreSQL binaries those
tests are skipped, except under ``CI=true``, where they fail.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from shopfloor.testing.postgres import PostgresServer, server_for_tests


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A private PostgreSQL on 127.0.0.1, started once for the session."""
    server = server_for_tests()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def dsn(postgres_server: PostgresServer) -> Iterator[str]:
    """A new, empty database of the session's PostgreSQL for one test, dropped after it."""
    dsn = postgres_server.create_database()
    try:
        yield dsn
    finally:
        postgres_server.drop_database(dsn.rsplit("dbname=", 1)[1])
