"""Scaled out, a write asked through one API server is confirmed through another, and a
confirmation is used once however many servers race for it.

The store: two :class:`PgConfirmations` (two connections, as two servers) on a throwaway
PostgreSQL. The route: two real `Server`s on it serving HTTP, both reaching one device
through a fake equipment writer (the device's values in a dict they share).
"""

from __future__ import annotations

import asyncio
import dataclasses
import secrets
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest

from shopfloor.config import ShopfloorConfig
from shopfloor.model.control import WritableTag, WriteValue
from shopfloor.server.app import Server
from shopfloor.server.writes import Confirmation, WriteDenied
from shopfloor.server.writes.confirmations import (
    Confirmations,
    MemoryConfirmations,
    PgConfirmations,
)
from shopfloor.testing.auth import grant, shared_secret_key

SCHEMA = "shopfloor_security"
TAG = WritableTag("acme/p1/press-1/speed_sp", "plc", True, "float32", unit="rpm")


def _ticket(
    user: str = "ana", new: WriteValue = 12.5, tag: WritableTag = TAG, within_s: float = 60
) -> Confirmation:
    return Confirmation(
        id=secrets.token_urlsafe(18), tag=tag, old=10.0, new=new, asked=new, user=user,
        expires_s=time.monotonic() + within_s,  # the memory's clock; PostgreSQL has its own
    )  # fmt: skip


def _same(taken: Confirmation, ticket: Confirmation) -> bool:
    """The same ticket; its expiry is on the clock of the store that kept it."""
    return dataclasses.replace(taken, expires_s=ticket.expires_s) == ticket


async def _code(take: object) -> str:
    try:
        await take  # type: ignore[misc]
    except WriteDenied as err:
        return err.code
    return "taken"


async def test_a_confirmation_put_by_one_server_is_taken_once_by_any(dsn: str) -> None:
    a = PgConfirmations(dsn, SCHEMA, max_pending=16)
    b = PgConfirmations(dsn, SCHEMA, max_pending=16)
    small = PgConfirmations(dsn, SCHEMA, max_pending=4)
    try:
        ticket = _ticket()
        await a.put(ticket, within_s=60)
        taken = await b.take(ticket.id, within_s=60)
        assert _same(taken, ticket)  # the whole ticket: tag, values, user
        assert await _code(a.take(ticket.id, within_s=60)) == "confirmation_used"
        assert await _code(b.take("never-issued", within_s=60)) == "confirmation_unknown"

        # two servers race for each of 10 confirmations: exactly one wins each
        tickets = [_ticket() for _ in range(10)]
        for t in tickets:
            await a.put(t, within_s=60)
        for t in tickets:
            codes = await asyncio.gather(
                _code(a.take(t.id, within_s=60)), _code(b.take(t.id, within_s=60))
            )
            assert sorted(codes) == ["confirmation_used", "taken"]

        late = _ticket()
        await a.put(late, within_s=-1)  # expired on the database's clock already
        assert await _code(b.take(late.id, within_s=60)) == "confirmation_expired"

        # writes turned off on one server withdraw what any server issued for the connector
        other = _ticket(tag=WritableTag("acme/p1/oven/t", "oven", True, "float32"))
        plc = _ticket()
        await a.put(other, within_s=60)
        await a.put(plc, within_s=60)
        await b.withdraw("plc")
        assert await _code(a.take(plc.id, within_s=60)) == "confirmation_unknown"
        assert await _code(a.take(other.id, within_s=60)) == "taken"

        # bounded: beyond max_pending unused ones, the oldest are dropped and counted
        many = [_ticket() for _ in range(6)]
        for i, t in enumerate(many):
            await small.put(t, within_s=60 + i)
        assert small.dropped == 2
        assert await _code(b.take(many[0].id, within_s=60)) == "confirmation_unknown"
        assert await _code(b.take(many[-1].id, within_s=60)) == "taken"
    finally:
        for store in (a, b, small):
            store.close()


@pytest.mark.parametrize("kind", ["memory", "postgres"])
async def test_every_store_keeps_the_same_rules(kind: str, dsn: str) -> None:
    """What a single server's memory does, the shared store does too."""
    store: Confirmations = (
        MemoryConfirmations(monotonic=time.monotonic, max_pending=3)
        if kind == "memory"
        else PgConfirmations(dsn, SCHEMA, max_pending=3)
    )
    try:
        ticket = _ticket()
        await store.put(ticket, within_s=60)
        assert _same(await store.take(ticket.id, within_s=60), ticket)
        assert await _code(store.take(ticket.id, within_s=60)) == "confirmation_used"
        assert await _code(store.take("never-issued", within_s=60)) == "confirmation_unknown"
        late = _ticket(within_s=-1)
        await store.put(late, within_s=-1)
        assert await _code(store.take(late.id, within_s=60)) == "confirmation_expired"
        withdrawn = _ticket()
        await store.put(withdrawn, within_s=60)
        await store.withdraw("plc")
        assert await _code(store.take(withdrawn.id, within_s=60)) == "confirmation_unknown"
        many = [_ticket(within_s=60 + i) for i in range(5)]
        for i, t in enumerate(many):
            await store.put(t, within_s=60 + i)
        assert store.dropped == 2  # the oldest two
        codes = [await _code(store.take(t.id, within_s=60)) for t in many]
        assert codes == ["confirmation_unknown"] * 2 + ["taken"] * 3
    finally:
        store.close()


class SharedDevice:
    """One device both servers write to: a fake equipment writer over a dict."""

    def __init__(self) -> None:
        self.values: dict[str, WriteValue] = {TAG.path: 10.0}
        self.writes: list[WriteValue] = []

    def connectors(self) -> Sequence[str]:
        return ["plc"]

    def target(self, path: str) -> WritableTag | None:
        return TAG if path == TAG.path else None

    def targets(self) -> list[WritableTag]:
        return [TAG]

    def check(self, path: str, value: WriteValue) -> WriteValue:
        return float(value)

    async def read(self, path: str) -> WriteValue | None:
        return self.values[path]

    async def write(self, path: str, value: WriteValue) -> WriteValue | None:
        self.writes.append(value)
        self.values[path] = value
        return value


@asynccontextmanager
async def _api_server(
    data: Path, dsn: str, device: SharedDevice
) -> AsyncIterator[httpx.AsyncClient]:
    config = ShopfloorConfig.model_validate(
        {
            "server": {"port": 0, "data_dir": str(data)},
            "historian": {"kind": "postgres", "dsn": dsn, "shared": True},
            "security": {"secret_key_file": str(shared_secret_key(data.parent))},
        }
    ).resolve_paths(data)
    server = Server(config, writers=[device])
    await server.start()
    stop, ready = asyncio.Event(), asyncio.Event()
    serving = asyncio.create_task(server.serve(stop, ready=ready))
    await asyncio.wait_for(ready.wait(), 10)
    try:
        async with httpx.AsyncClient(
            base_url=server.url, timeout=30, headers=grant(server.app, user="ana")
        ) as client:
            yield client
    finally:
        stop.set()
        await serving
        await server.close()


async def test_ask_on_one_server_and_confirm_on_another(tmp_path: Path, dsn: str) -> None:
    device = SharedDevice()
    async with (
        _api_server(tmp_path / "a", dsn, device) as a,
        _api_server(tmp_path / "b", dsn, device) as b,
    ):
        on = await a.put("/api/v1/connectors/plc/writes", json={"enabled": True})
        assert on.status_code == 200, on.text

        async def ask(value: float) -> str:
            r = await a.post("/api/v1/writes", json={"path": TAG.path, "value": value})
            assert r.status_code == 200, r.text
            return str(r.json()["confirmation"])

        confirmation = await ask(12.5)
        done = await b.post("/api/v1/writes", json={"confirmation": confirmation})
        assert done.status_code == 200, done.text
        assert (done.json()["old"], done.json()["new"]) == (10.0, 12.5)
        again = await a.post("/api/v1/writes", json={"confirmation": confirmation})
        assert again.status_code == 409, again.text
        assert again.json()["error"]["code"] == "confirmation_used"

        # both servers confirm the same one at once: one write reaches the device
        confirmation = await ask(15.0)
        answers = await asyncio.gather(
            *(c.post("/api/v1/writes", json={"confirmation": confirmation}) for c in (a, b))
        )
        assert sorted(r.status_code for r in answers) == [200, 409]
        assert device.writes == [12.5, 15.0]
