"""A store that goes away (PostgreSQL restarting under the API) is answered ``503`` with
``Retry-After`` and the error envelope naming the store, not a ``500``; once it is back,
the same requests work again.

A private PostgreSQL per test (it is killed with SIGKILL mid-test, as a crash would, and
started again on the same data), so the session's shared one is left alone.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from importlib import resources
from pathlib import Path

import httpx
import pytest

from shopfloor.config import ShopfloorConfig
from shopfloor.config.analytics import AnalyticsSection
from shopfloor.model import LiveBatch, PointBatch, now_ns
from shopfloor.runtime.channels import Channel
from shopfloor.server.analytics.machines import machines_of
from shopfloor.server.analytics.pg_store import PgAnalyticsStore
from shopfloor.server.analytics.service import Analytics
from shopfloor.server.api import create_app
from shopfloor.server.app import Server
from shopfloor.server.assets.model import load_asset_model
from shopfloor.server.historian.postgres import PostgresHistorian
from shopfloor.server.ingest import Ingestor
from shopfloor.server.security import AuditLog, Auth
from shopfloor.server.security.pg_audit import PgAuditStore
from shopfloor.testing.auth import grant, shared_secret_key
from shopfloor.testing.postgres import PostgresServer, server_for_tests

PASSWORD = "correct horse battery staple"
TAG = "acme/plant-1/machining/line-1/cnc-01/spindle_temp"
DEMO = Path(str(resources.files("shopfloor") / "demo_plant"))


@pytest.fixture
def pg() -> Iterator[PostgresServer]:
    """A PostgreSQL of this test's own, to kill (durable: what it committed survives)."""
    server = server_for_tests(durable=True)
    try:
        yield server
    finally:
        server.stop()


def assert_unavailable(answer: httpx.Response, store: str) -> None:
    assert answer.status_code == 503, answer.text
    error = answer.json()["error"]
    assert error["code"] == "unavailable"
    assert error["message"].startswith(f"{store} is unavailable"), error
    assert int(answer.headers["retry-after"]) > 0


@asynccontextmanager
async def _serving(config: ShopfloorConfig) -> AsyncIterator[Server]:
    server = Server(config)
    await server.start()
    stop, ready = asyncio.Event(), asyncio.Event()
    serving = asyncio.create_task(server.serve(stop, ready=ready))
    try:
        await asyncio.wait_for(ready.wait(), 30)
        yield server
    finally:
        stop.set()
        await serving
        await server.close()


async def test_a_lost_shared_security_store_is_503_and_a_session_works_again_after(
    pg: PostgresServer, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    config = ShopfloorConfig.model_validate(
        {
            "server": {"port": 0, "data_dir": str(data)},
            "historian": {"kind": "postgres", "dsn": pg.create_database(), "shared": True},
            "security": {"secret_key_file": str(shared_secret_key(tmp_path))},
        }
    ).resolve_paths(data)
    async with _serving(config) as server:
        await server.auth.add_user("ada", PASSWORD, role="operator")
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as browser:
            login = {"name": "ada", "password": PASSWORD}
            assert (await browser.post("/api/v1/auth/login", json=login)).status_code == 200
            pg.kill()
            try:
                assert_unavailable(await browser.get("/api/v1/auth/me"), "the security store")
                assert_unavailable(
                    await browser.post("/api/v1/auth/login", json=login), "the security store"
                )
                assert_unavailable(  # a write's early look-up of who it is, too
                    await browser.post("/api/v1/auth/logout"), "the security store"
                )
            finally:
                pg.start()
            me = await browser.get("/api/v1/auth/me")  # the session outlived the restart
            assert me.status_code == 200, me.text
            assert me.json()["name"] == "ada"


async def test_a_lost_historian_audit_log_and_analytics_store_are_503_naming_each(
    pg: PostgresServer, tmp_path: Path
) -> None:
    dsn = pg.create_database()
    historian = PostgresHistorian(dsn, flush_interval_s=0.05)
    await historian.start()
    live: Channel[LiveBatch] = Channel("live", maxsize=64)
    audit = AuditLog(tmp_path / "audit.sqlite", store=lambda: PgAuditStore(dsn, "shopfloor"))
    await audit.start()
    model = load_asset_model(DEMO / "plant.toml", DEMO / "templates")
    analytics = Analytics(
        historian,
        machines_of(model),
        AnalyticsSection(),
        tmp_path,
        store=lambda: PgAnalyticsStore(dsn, "shopfloor"),
    )
    await analytics.start()
    app = create_app(
        historian=historian,
        ingestor=Ingestor(historian, live),
        live=live,
        version="0.0.0",
        auth=Auth(None),  # in memory: only the stores in PostgreSQL go away
        audit=audit,
        analytics=analytics,
    )
    await historian.write(PointBatch.from_points([(TAG, now_ns(), 1.0, 0)]))
    await historian.flush()
    transport = httpx.ASGITransport(app=app)
    try:
        async with httpx.AsyncClient(
            transport=transport, base_url="http://t", headers=grant(app)
        ) as client:
            series = f"/api/v1/tags/{TAG}/series"
            assert (await client.get(series)).status_code == 200
            assert (await client.get("/api/v1/audit")).status_code == 200
            reason = "/api/v1/downtime/cnc-01/2026-01-01T00:00:00Z"
            pg.kill()
            try:
                assert_unavailable(await client.get(series), "the historian")
                assert_unavailable(await client.get("/api/v1/audit"), "the audit log")
                for path in ("/api/v1/downtime", "/api/v1/oee"):  # stored stops and hours
                    got = await client.get(path, params={"equipment": "cnc-01"})
                    assert_unavailable(got, "the analytics store")
                # an audited write that failed on the analytics store, or was refused (no
                # such token: 404), whose entry cannot be written either: nothing was
                # done, so the answer is the audit log's outage
                assert_unavailable(await client.put(reason, json={"reason": 1}), "the audit log")
                assert_unavailable(await client.delete("/api/v1/tokens/nope"), "the audit log")
            finally:
                pg.start()
            assert (await client.get(series)).status_code == 200  # each store is back
            assert (await client.get("/api/v1/audit")).status_code == 200
            downtime = await client.get("/api/v1/downtime", params={"equipment": "cnc-01"})
            assert downtime.status_code == 200, downtime.text
    finally:
        await analytics.close()
        await audit.close()
        await historian.close()
