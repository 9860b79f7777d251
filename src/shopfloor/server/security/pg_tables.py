"""The API servers' shared state in PostgreSQL: users, sessions, tokens, audit, writes switches.

With ``historian.kind = "postgres"`` and ``historian.shared = true`` several ``shopfloor
server`` processes answer behind one load balancer (docs/scale-out.md), so what a single
server keeps in its data folder (``security.sqlite``, ``audit.sqlite``, ``writes.json``)
lives here instead, in the **sibling schema** ``<historian schema>_security``:

* a restore of the history (:mod:`~shopfloor.server.historian.pg_backup` renames the
  historian's schema aside and restores a dump) must not bring back a revoked token, a
  disabled user or a shorter audit chain;
* a database administrator can grant on it apart (e.g. the audit table to auditors only).

The tables are created by whichever process connects first, under a transaction advisory
lock (:data:`SETUP_LOCK_CLASS`): two servers starting at once would otherwise race in
``CREATE ... IF NOT EXISTS`` (PostgreSQL checks its catalog's unique keys, not the ``IF
NOT EXISTS``, under concurrency).
"""

from __future__ import annotations

from typing import Any, Final

import psycopg
from psycopg import sql

from shopfloor.server.pg_locks import AUDIT_APPEND, SECURITY_SETUP

__all__ = ["AUDIT_LOCK_CLASS", "SCHEMA_SUFFIX", "SETUP_LOCK_CLASS", "connect", "security_schema"]

SCHEMA_SUFFIX: Final = "_security"
SETUP_LOCK_CLASS: Final = SECURITY_SETUP
"""First key of the advisory lock taken while the tables are created."""
AUDIT_LOCK_CLASS: Final = AUDIT_APPEND
"""First key of the transaction advisory lock that serialises audit appends (one chain)."""

_TABLES: Final = (
    "CREATE TABLE IF NOT EXISTS users ("
    " name text PRIMARY KEY, hash text NOT NULL, role text NOT NULL, sites text NOT NULL,"
    " disabled integer NOT NULL DEFAULT 0, created_ns bigint NOT NULL,"
    " failures integer NOT NULL DEFAULT 0, lockouts integer NOT NULL DEFAULT 0,"
    " locked_until_ns bigint NOT NULL DEFAULT 0, totp_secret text,"
    " totp_enabled integer NOT NULL DEFAULT 0, totp_step bigint NOT NULL DEFAULT 0,"
    " locale text, totp_pending text)",
    "CREATE TABLE IF NOT EXISTS sessions ("
    ' key text PRIMARY KEY, "user" text NOT NULL, created_ns bigint NOT NULL,'
    " seen_ns bigint NOT NULL)",
    'CREATE INDEX IF NOT EXISTS sessions_user ON sessions ("user")',
    "CREATE TABLE IF NOT EXISTS tokens ("
    " id text PRIMARY KEY, name text NOT NULL, key text NOT NULL UNIQUE, role text NOT NULL,"
    " owner text NOT NULL, created_ns bigint NOT NULL, expires_ns bigint,"
    ' revoked_ns bigint, "user" text)',
    "CREATE TABLE IF NOT EXISTS audit ("
    ' seq bigint PRIMARY KEY, ts_ns bigint NOT NULL, "user" text NOT NULL,'
    " action text NOT NULL, target text NOT NULL, detail text NOT NULL,"
    " client text NOT NULL, outcome text NOT NULL, hash text NOT NULL)",
    "CREATE INDEX IF NOT EXISTS audit_ts ON audit (ts_ns)",
    "CREATE INDEX IF NOT EXISTS audit_target ON audit (target)",
    # append-only in the database itself, like the SQLite file's triggers
    "CREATE OR REPLACE FUNCTION audit_append_only() RETURNS trigger LANGUAGE plpgsql AS"
    " $$ BEGIN RAISE EXCEPTION 'the audit log is append-only'; END $$",
    "DO $$ BEGIN"
    " IF NOT EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = 'audit'::regclass"
    " AND tgname = 'audit_no_change') THEN"
    " CREATE TRIGGER audit_no_change BEFORE UPDATE OR DELETE ON audit"
    " FOR EACH ROW EXECUTE FUNCTION audit_append_only(); END IF;"
    " IF NOT EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = 'audit'::regclass"
    " AND tgname = 'audit_no_truncate') THEN"
    " CREATE TRIGGER audit_no_truncate BEFORE TRUNCATE ON audit"
    " FOR EACH STATEMENT EXECUTE FUNCTION audit_append_only(); END IF; END $$",
    "CREATE TABLE IF NOT EXISTS write_switches ("
    " connector text PRIMARY KEY, enabled boolean NOT NULL, changed_ns bigint NOT NULL)",
)


def security_schema(historian_schema: str) -> str:
    """The schema of the shared state beside the historian's ``historian_schema``."""
    return historian_schema + SCHEMA_SUFFIX


def connect(dsn: str, schema: str, *, application_name: str) -> psycopg.Connection[Any]:
    """An autocommit connection whose ``search_path`` is ``schema``, the tables created.

    Raises:
        psycopg.Error: the database cannot be reached or the tables cannot be created.
    """
    con = psycopg.connect(
        dsn, autocommit=True, application_name=application_name, connect_timeout=10
    )
    try:
        with con.transaction():
            con.execute(
                "SELECT pg_advisory_xact_lock(%s, hashtext(%s))", [SETUP_LOCK_CLASS, schema]
            )
            con.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
            con.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(schema)))
            for statement in _TABLES:
                con.execute(statement)
    except BaseException:
        con.close()
        raise
    return con
