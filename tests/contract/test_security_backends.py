"""Users, sessions, tokens and the audit log behave the same in the data folder's SQLite
files and in the shared PostgreSQL of a scaled-out installation.

Each backend is one subclass of the suites with its own ``backend`` fixture (a factory of
stores on one database: two of them are two servers sharing it); the PostgreSQL one
depends on the session's throwaway server and gets a new, empty database per test.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import psycopg
import pytest

from shopfloor.config.security import SecuritySection
from shopfloor.server.security import AuditLog, Auth, LoginRefused, Outcome, SecurityError
from shopfloor.server.security.audit import AuditBackend, AuditStore
from shopfloor.server.security.pg_audit import PgAuditStore
from shopfloor.server.security.pg_store import PgSecurityStore
from shopfloor.server.security.store import SecurityBackend, SecurityStore
from shopfloor.server.writes.pg_switches import PgWriteSwitches
from shopfloor.testing.postgres import PostgresServer

S = 1_000_000_000
PASSWORD = "correct horse battery staple"
SCHEMA = "shopfloor_security"


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000 * S

    def __call__(self) -> int:
        return self.now


class Backend:
    """Opens stores on one database (each call: another connection, as another server)."""

    def __init__(
        self,
        security: Callable[[], SecurityBackend],
        audit: Callable[[], AuditBackend],
    ) -> None:
        self.security = security
        self.audit = audit


class SecurityContract:
    """The behaviour every security backend must have."""

    @pytest.fixture
    def clock(self) -> Clock:
        return Clock()

    @pytest.fixture
    async def auth(self, backend: Backend, clock: Clock) -> AsyncIterator[Auth]:
        settings = SecuritySection(lockout_threshold=3, lockout_base_s=10, lockout_max_s=60)
        service = Auth(None, settings=settings, clock=clock, store=backend.security)
        await service.start()
        yield service
        await service.close()

    async def test_login_opens_a_new_session_each_time(self, auth: Auth) -> None:
        await auth.add_user("ada", PASSWORD, role="operator")
        first, s1 = await auth.login("ada", PASSWORD, client="10.0.0.1")
        _, s2 = await auth.login("ada", PASSWORD, client="10.0.0.1")
        assert s1 != s2
        assert (first.name, first.role) == ("ada", "operator")
        principal = await auth.session_principal(s1)
        assert principal is not None
        assert principal.csrf == first.csrf
        assert await auth.logout(s1) == "ada"
        assert await auth.session_principal(s1) is None

    async def test_a_taken_name_is_refused(self, auth: Auth) -> None:
        await auth.add_user("ada", PASSWORD, role="operator")
        with pytest.raises(SecurityError, match="exists") as taken:
            await auth.add_user("ada", PASSWORD, role="viewer")
        assert taken.value.status == 409

    async def test_lockout_grows_and_always_ends_even_for_the_last_admin(
        self, auth: Auth, clock: Clock
    ) -> None:
        await auth.add_user("root", PASSWORD, role="admin")

        async def fail(times: int) -> LoginRefused:
            refused: LoginRefused | None = None
            for _ in range(times):
                with pytest.raises(LoginRefused) as caught:
                    await auth.login("root", "wrong password", client="10.0.0.9")
                refused = caught.value
            assert refused is not None
            return refused

        assert (await fail(2)).status == 401
        first = await fail(1)
        assert (first.status, first.retry_after_s) == (429, 10)
        with pytest.raises(LoginRefused) as locked:  # the right password does not help now
            await auth.login("root", PASSWORD, client="10.0.0.9")
        assert locked.value.status == 429
        clock.now += 11 * S
        assert (await fail(3)).retry_after_s == 20  # the next lockout is longer
        for _ in range(4):  # ... up to the ceiling, never for good
            clock.now += 61 * S
            assert (await fail(3)).retry_after_s <= 60
        clock.now += 61 * S
        principal, _ = await auth.login("root", PASSWORD, client="10.0.0.9")
        assert principal.name == "root"

    async def test_failed_logins_on_two_servers_count_together(
        self, backend: Backend, auth: Auth, clock: Clock
    ) -> None:
        other = Auth(None, settings=auth.settings, clock=clock, store=backend.security)
        await other.start()
        try:
            await auth.add_user("root", PASSWORD, role="admin")
            for server in (auth, other):
                with pytest.raises(LoginRefused):
                    await server.login("root", "wrong password", client="10.0.0.9")
            with pytest.raises(LoginRefused) as third:  # the threshold is 3, across both
                await auth.login("root", "wrong password", client="10.0.0.9")
            assert third.value.status == 429
            with pytest.raises(LoginRefused) as locked:
                await other.login("root", PASSWORD, client="10.0.0.9")
            assert locked.value.status == 429
        finally:
            await other.close()

    async def test_a_password_change_ends_the_other_sessions_and_disabling_ends_all(
        self, auth: Auth
    ) -> None:
        await auth.add_user("root", PASSWORD, role="admin")
        await auth.add_user("ada", PASSWORD, role="operator")
        _, here = await auth.login("ada", PASSWORD, client="a")
        _, there = await auth.login("ada", PASSWORD, client="b")
        await auth.set_password("ada", "another good passphrase", keep_session=here)
        assert await auth.session_principal(here) is not None
        assert await auth.session_principal(there) is None
        await auth.update_user("ada", disabled=True)
        assert await auth.session_principal(here) is None
        with pytest.raises(LoginRefused):
            await auth.login("ada", "another good passphrase", client="a")

    async def test_the_last_enabled_admin_cannot_be_demoted_or_disabled(self, auth: Auth) -> None:
        await auth.add_user("root", PASSWORD, role="admin")
        with pytest.raises(SecurityError, match="last enabled admin"):
            await auth.update_user("root", role="engineer")
        with pytest.raises(SecurityError, match="last enabled admin"):
            await auth.update_user("root", disabled=True)
        await auth.add_user("second", PASSWORD, role="admin")
        await auth.update_user("root", role="engineer")
        assert [u.role for u in await auth.users()] == ["engineer", "admin"]

    async def test_tokens_are_refused_when_revoked_or_expired(
        self, auth: Auth, clock: Clock
    ) -> None:
        await auth.add_user("ada", PASSWORD, role="operator")
        token, secret = await auth.create_token("grafana", role="read", owner="x", expires_ns=None)
        _, short_secret = await auth.create_token(
            "short", role="admin", owner="x", expires_ns=clock.now + 60 * S, user="ada"
        )
        assert await auth.token_principal(secret) is not None
        acting = await auth.token_principal(short_secret)
        assert acting is not None
        assert (acting.name, acting.role) == ("ada", "operator")  # no more than the user
        assert secret not in repr([t.public() for t in await auth.tokens()])
        await auth.revoke_token(token.id)
        assert await auth.token_principal(secret) is None
        clock.now += 61 * S
        assert await auth.token_principal(short_secret) is None
        assert await auth.token_principal("sft_not_a_token") is None

    async def test_first_start_creates_one_admin_and_never_again(
        self, backend: Backend, auth: Auth
    ) -> None:
        other = Auth(None, settings=auth.settings, store=backend.security)
        await other.start()
        try:
            passwords = await asyncio.gather(auth.bootstrap_admin(), other.bootstrap_admin())
        finally:
            await other.close()
        made = [p for p in passwords if p is not None]
        assert len(made) == 1  # two servers starting at once: one admin, one password
        principal, _ = await auth.login("admin", made[0], client="a")
        assert principal.role == "admin"
        assert await auth.bootstrap_admin() is None

    async def test_a_second_factor_begun_on_one_server_is_confirmed_on_another(
        self, backend: Backend, auth: Auth, clock: Clock
    ) -> None:
        import pyotp

        other = Auth(None, settings=auth.settings, clock=clock, store=backend.security)
        await other.start()
        try:
            await auth.add_user("ada", PASSWORD, role="engineer")
            first, _ = await auth.totp_begin("ada")
            assert await other.totp_confirm("ada", pyotp.TOTP(first).at(clock.now // S))
            # a new secret replaces the enabled one only once one of its codes is confirmed
            second, _ = await other.totp_begin("ada")
            with pytest.raises(LoginRefused):
                await auth.login("ada", PASSWORD, client="a")  # no code
            # the next time step: the current one was used by the first confirmation
            assert await auth.totp_confirm("ada", pyotp.TOTP(second).at(clock.now // S + 30))
        finally:
            await other.close()


class AuditContract:
    """The behaviour every audit backend must have."""

    async def test_entries_are_kept_in_order_filtered_and_survive_a_reopen(
        self, backend: Backend
    ) -> None:
        now = [1_750_000_000 * S]
        log = AuditLog(Path("unused"), clock=lambda: now[0], store=backend.audit)
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

        log = AuditLog(Path("unused"), store=backend.audit)
        await log.start()
        try:
            every = await log.entries()
            assert [(e.user, e.action, e.target, e.outcome) for e in every] == rows
            assert every[0].detail == {"before": {"serial": "A"}, "after": None}
            assert [e.seq for e in await log.entries(user="ada")] == [every[0].seq, every[2].seq]
            assert len(await log.entries(target_prefix="acme/p1/press")) == 2
            assert len(await log.entries(target_prefix="acme/p2/x%y_")) == 1  # no wildcards
            assert len(await log.entries(target_prefix="acme/p2/x_")) == 0
            assert len(await log.entries(outcome=Outcome.REJECTED)) == 1
            assert len(await log.entries(since_ns=every[1].ts_ns, until_ns=every[2].ts_ns)) == 1
            newest = await log.entries(newest_first=True, limit=2)
            assert [e.seq for e in newest] == [every[2].seq, every[1].seq]
            older = await log.entries(newest_first=True, before_seq=newest[-1].seq, limit=2)
            assert [e.seq for e in older] == [every[0].seq]
        finally:
            await log.close()


class TestSqlite(SecurityContract, AuditContract):
    @pytest.fixture
    def backend(self, tmp_path: Path) -> Backend:
        return Backend(
            lambda: SecurityStore(tmp_path / "security.sqlite"),
            lambda: AuditStore(tmp_path / "audit.sqlite"),
        )


class TestPostgres(SecurityContract, AuditContract):
    @pytest.fixture
    def dsn(self, postgres_server: PostgresServer) -> Iterator[str]:
        dsn = postgres_server.create_database()
        yield dsn
        postgres_server.drop_database(dsn.rsplit("dbname=", 1)[1])

    @pytest.fixture
    def backend(self, dsn: str) -> Backend:
        return Backend(lambda: PgSecurityStore(dsn, SCHEMA), lambda: PgAuditStore(dsn, SCHEMA))

    async def test_the_database_refuses_to_change_the_audit_log_and_verify_sees_a_forger(
        self, backend: Backend, dsn: str
    ) -> None:
        log = AuditLog(Path("unused"), store=backend.audit)
        await log.start()
        try:
            for i in range(4):
                await log.record(user="ada", action="a", target=f"t{i}", outcome=Outcome.OK)
            with psycopg.connect(dsn, autocommit=True) as con:
                con.execute(f"SET search_path TO {SCHEMA}")
                for statement in (
                    "UPDATE audit SET \"user\" = 'eve'",
                    "DELETE FROM audit WHERE seq = 2",
                    "TRUNCATE audit",
                ):
                    with pytest.raises(psycopg.errors.RaiseException, match="append-only"):
                        con.execute(statement)
                # someone who may drop the triggers can edit a row: verify names it
                con.execute("ALTER TABLE audit DISABLE TRIGGER audit_no_change")
                con.execute("UPDATE audit SET \"user\" = 'eve' WHERE seq = 3")
                con.execute("ALTER TABLE audit ENABLE TRIGGER audit_no_change")
            report = await log.verify()
            assert report.broken_seq == 3
        finally:
            await log.close()

    async def test_two_servers_append_to_one_audit_chain(self, backend: Backend) -> None:
        logs = [AuditLog(Path("unused"), store=backend.audit) for _ in range(2)]
        for log in logs:
            await log.start()
        try:
            written = await asyncio.gather(
                *(
                    log.record(user=f"u{n}", action="a", target=f"t{i}", outcome=Outcome.OK)
                    for i in range(10)
                    for n, log in enumerate(logs)
                )
            )
            report = await logs[1].verify()
        finally:
            for log in logs:
                await log.close()
        assert sorted(e.seq for e in written) == list(range(1, 21))
        assert (report.rows, report.head_seq, report.broken_seq) == (20, 20, None)

    def test_two_servers_starting_together_create_the_tables_once(self, dsn: str) -> None:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(4) as pool:
            stores = list(pool.map(lambda _: PgSecurityStore(dsn, SCHEMA), range(4)))
        for store in stores:
            assert store.count_users() == 0
            store.close()

    async def test_a_writes_switch_turned_on_one_server_is_seen_by_another(self, dsn: str) -> None:
        a, b = PgWriteSwitches(dsn, SCHEMA), PgWriteSwitches(dsn, SCHEMA)
        try:
            await asyncio.to_thread(a.load)
            await asyncio.to_thread(b.load)
            assert await a.set("plc-1", True) is False
            assert not b.enabled("plc-1")  # as last read ...
            await b.refresh()
            assert b.enabled("plc-1")  # ... and read again before every write step
            with psycopg.connect(dsn, autocommit=True) as con:  # a lost connection ...
                con.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE application_name = 'shopfloor-writes'"
                )
            await b.refresh()
            assert b.enabled("plc-1")  # ... is opened again, not read as "all off"
            assert await b.set("plc-1", False) is True
            await a.refresh()
            assert not a.enabled("plc-1")
        finally:
            a.close()
            b.close()

    async def test_a_connection_lost_between_requests_is_opened_again(
        self, backend: Backend, auth: Auth, dsn: str
    ) -> None:
        log = AuditLog(Path("unused"), store=backend.audit)
        await log.start()
        try:
            await auth.add_user("ada", PASSWORD, role="operator")
            await log.record(user="ada", action="a", target="t0", outcome=Outcome.OK)
            with psycopg.connect(dsn, autocommit=True) as con:  # a restart, an idle timeout
                cut = con.execute(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                    " WHERE application_name IN ('shopfloor-security', 'shopfloor-audit')"
                ).fetchone()
            assert cut == (2,)
            principal, _ = await auth.login("ada", PASSWORD, client="a")
            assert principal.name == "ada"
            entry = await log.record(user="ada", action="a", target="t1", outcome=Outcome.OK)
            assert entry.seq == 2
            assert (await log.verify()).broken_seq is None
        finally:
            await log.close()
