"""The audit log's SQLite file: append-only, hash-chained; and where the acting user comes
from. Filtered reads and one chain across servers: tests/contract/test_security_backends.py."""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from shopfloor.server.security import ActorMismatch, AuditLog, Outcome, Principal, acting_user
from shopfloor.server.security.audit import ChainReport, chain_hash
from shopfloor.server.security.roles import permissions_of

S = 10**9


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


async def _five_rows(path: Path) -> list[str]:
    log = AuditLog(path)
    await log.start()
    hashes = []
    for i in range(5):
        entry = await log.record(
            user="ada", action="alarm.comment", target=f"a{i}", outcome=Outcome.OK
        )
        hashes.append(entry.hash)
    await log.close()
    return hashes


def _tamper(path: Path, *statements: str) -> None:
    """What someone with the sqlite3 shell can do: drop the triggers, then rewrite."""
    con = sqlite3.connect(path)
    try:
        con.execute("DROP TRIGGER audit_no_update")
        con.execute("DROP TRIGGER audit_no_delete")
        for statement in statements:
            con.execute(statement)
        con.commit()
    finally:
        con.close()


async def _verify(path: Path) -> ChainReport:
    log = AuditLog(path)
    await log.start()
    try:
        return await log.verify()
    finally:
        await log.close()


async def test_the_hash_chain_holds_and_names_the_first_row_changed_behind_its_back(
    tmp_path: Path,
) -> None:
    path = tmp_path / "audit.sqlite"
    hashes = await _five_rows(path)
    assert len(set(hashes)) == 5
    intact = await _verify(path)
    assert (intact.rows, intact.head_seq, intact.broken_seq) == (5, 5, None)
    assert intact.head_hash == hashes[-1]
    # a reopened log goes on from its head: the sixth row chains onto the fifth
    log = AuditLog(path)
    await log.start()
    sixth = await log.record(user="bo", action="alarm.comment", target="a5", outcome=Outcome.OK)
    await log.close()
    assert (await _verify(path)).head_hash == sixth.hash

    edited = tmp_path / "edited.sqlite"
    await _five_rows(edited)
    _tamper(edited, "UPDATE audit SET user = 'eve' WHERE seq = 3")
    assert (await _verify(edited)).broken_seq == 3

    deleted = tmp_path / "deleted.sqlite"
    await _five_rows(deleted)
    _tamper(deleted, "DELETE FROM audit WHERE seq = 2")
    assert (await _verify(deleted)).broken_seq == 3  # row 3 no longer follows row 1

    rehashed = tmp_path / "rehashed.sqlite"
    await _five_rows(rehashed)
    # a forger who recomputes the edited row's own hash still breaks the next row's link
    con = sqlite3.connect(rehashed)
    row = con.execute("SELECT * FROM audit WHERE seq = 2").fetchone()
    previous = con.execute("SELECT hash FROM audit WHERE seq = 1").fetchone()[0]
    con.close()
    forged = chain_hash(previous, (*row[:2], "eve", *row[3:8]))
    _tamper(rehashed, f"UPDATE audit SET user = 'eve', hash = '{forged}' WHERE seq = 2")
    assert (await _verify(rehashed)).broken_seq == 3


async def test_a_log_from_before_the_chain_keeps_its_rows_and_chains_new_ones(
    tmp_path: Path,
) -> None:
    path = tmp_path / "audit.sqlite"
    con = sqlite3.connect(path)
    con.execute(
        "CREATE TABLE audit (seq INTEGER PRIMARY KEY AUTOINCREMENT, ts_ns INTEGER NOT NULL,"
        " user TEXT NOT NULL, action TEXT NOT NULL, target TEXT NOT NULL, detail TEXT NOT NULL,"
        " client TEXT NOT NULL, outcome TEXT NOT NULL)"
    )
    con.execute("INSERT INTO audit VALUES (1, 1, 'ada', 'a', 't', '{}', '', 'ok')")
    con.commit()
    con.close()
    log = AuditLog(path)
    await log.start()
    entry = await log.record(user="bo", action="a", target="t", outcome=Outcome.OK)
    report = await log.verify()
    every = await log.entries()
    await log.close()
    assert entry.seq == 2
    assert [e.user for e in every] == ["ada", "bo"]
    assert (report.rows, report.unchained, report.broken_seq) == (2, 1, None)


_WRITER = """
import sys
from pathlib import Path
from shopfloor.server.security.audit import AuditEntry, AuditStore, Outcome
store = AuditStore(Path(sys.argv[1]))
sys.stdin.readline()  # start together
for i in range(int(sys.argv[3])):
    store.append(AuditEntry(ts_ns=i, user=sys.argv[2], action="a", target=str(i),
                            outcome=Outcome.OK))
store.close()
"""


async def test_two_processes_appending_at_once_keep_one_valid_chain(tmp_path: Path) -> None:
    path = tmp_path / "audit.sqlite"
    log = AuditLog(path)  # the server's, open (and appending) all along
    await log.start()
    await log.record(user="server", action="a", target="before", outcome=Outcome.OK)
    writers = [
        subprocess.Popen(  # noqa: ASYNC220 - started at once, waited for in a thread
            [sys.executable, "-c", _WRITER, str(path), name, "150"],
            stdin=subprocess.PIPE,
            text=True,
        )
        for name in ("cli-1", "cli-2")
    ]
    for writer in writers:
        assert writer.stdin is not None
        writer.stdin.write("go\n")
        writer.stdin.close()
    for i in range(20):  # the server keeps appending while they do
        await log.record(user="server", action="a", target=str(i), outcome=Outcome.OK)
    codes = [await asyncio.to_thread(w.wait, 60) for w in writers]
    await log.record(user="server", action="a", target="after", outcome=Outcome.OK)
    report = await log.verify()
    every = await log.entries(limit=10_000)
    await log.close()
    assert codes == [0, 0]
    assert [e.seq for e in every] == list(range(1, 323))
    assert {e.user: sum(x.user == e.user for x in every) for e in every} == {
        "server": 22,
        "cli-1": 150,
        "cli-2": 150,
    }
    assert (report.rows, report.broken_seq) == (322, None)


def test_the_acting_user_is_the_authenticated_principal_and_a_claimed_other_is_refused() -> None:
    ada = Principal("ada", "operator", permissions_of("operator"))
    scope = {"state": {"principal": ada}, "headers": [(b"x-shopfloor-user", b"bo")]}
    assert acting_user(scope) == "ada"  # the old header names nobody any more
    assert acting_user(scope, "ada") == "ada"
    assert acting_user(scope, " ada ") == "ada"
    assert acting_user(scope, 42) == "ada"  # a malformed body claims nobody
    with pytest.raises(ActorMismatch, match="'bo'"):
        acting_user(scope, "bo")
    assert acting_user({"state": {}}, "bo") is None  # not authenticated (an edge)
