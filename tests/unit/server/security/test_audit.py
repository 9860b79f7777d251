"""The audit log: durable, append-only, filtered reads; and where the acting user comes from."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from shopfloor.server.security import AuditLog, Outcome, acting_user

S = 10**9


async def test_entries_are_kept_in_order_filtered_and_survive_a_reopen(tmp_path: Path) -> None:
    now = [1_750_000_000 * S]
    log = AuditLog(tmp_path / "audit.sqlite", clock=lambda: now[0])
    await log.start()
    rows = [
        ("ada", "alarm.acknowledge", "acme/p1/press/l1/c1/press-1/oil.H", Outcome.OK),
        ("bo", "assets.equipment.update", "acme/p1/press/l1/c1/press-1", Outcome.REJECTED),
        ("ada", "assets.equipment.delete", "acme/p2/x%y_z/l/c/e", Outcome.OK),
    ]
    for user, action, target, outcome in rows:
        entry = await log.record(
            user=user,
            action=action,
            target=target,
            outcome=outcome,
            client="10.0.0.7",
            detail={"before": {"serial": "A"}, "after": None},
        )
        assert entry.seq > 0
        now[0] += S
    await log.close()

    log = AuditLog(tmp_path / "audit.sqlite")
    await log.start()
    try:
        every = await log.entries()
        assert [(e.user, e.action, e.target, e.outcome) for e in every] == rows
        assert every[0].detail == {"before": {"serial": "A"}, "after": None}
        assert every[0].client == "10.0.0.7"
        assert [e.seq for e in await log.entries(user="ada")] == [every[0].seq, every[2].seq]
        assert len(await log.entries(target_prefix="acme/p1/press")) == 2
        assert len(await log.entries(target_prefix="acme/p2/x%y_")) == 1  # no LIKE wildcards
        assert len(await log.entries(target_prefix="acme/p2/x_")) == 0
        assert len(await log.entries(outcome=Outcome.REJECTED)) == 1
        assert len(await log.entries(since_ns=every[1].ts_ns, until_ns=every[2].ts_ns)) == 1
        assert len(await log.entries(after_seq=every[0].seq, limit=1)) == 1
    finally:
        await log.close()


async def test_the_file_refuses_updates_and_deletes(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "audit.sqlite")
    await log.start()
    await log.record(user="ada", action="a", target="t", outcome=Outcome.OK)
    await log.close()
    con = sqlite3.connect(tmp_path / "audit.sqlite")
    try:
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            con.execute("UPDATE audit SET user = 'eve'")
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            con.execute("DELETE FROM audit")
    finally:
        con.close()


def test_the_acting_user_is_the_body_s_then_the_header_s() -> None:
    headers = {"X-Shopfloor-User": " bo "}
    assert acting_user(headers, "ada") == "ada"
    assert acting_user(headers, None) == "bo"
    assert acting_user(headers, 42) == "bo"  # a malformed body names nobody
    assert acting_user({}, "  ") is None
    assert acting_user({}, "x" * 500) == "x" * 200
