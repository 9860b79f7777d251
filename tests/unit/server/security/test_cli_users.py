"""`shopfloor users` and `shopfloor tokens` on a data folder: what the server then accepts."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from shopfloor.cli import app
from shopfloor.server.security import Auth
from shopfloor.server.security.audit import AuditStore

PASSWORD = "a long enough passphrase"


async def test_users_and_tokens_made_by_the_cli_work_and_are_audited(tmp_path: Path) -> None:
    data = tmp_path / "data"
    secret_file = tmp_path / "pw"
    secret_file.write_text(PASSWORD + "\n")
    runner = CliRunner()

    def run(*args: str) -> tuple[int, str]:
        result = runner.invoke(app, [*args, "--data-dir", str(data)])
        return result.exit_code, result.stdout

    assert (
        run("users", "add", "ada", "--role", "admin", "--password-file", str(secret_file))[0] == 0
    )
    weak = tmp_path / "weak"
    weak.write_text("password123\n")
    assert run("users", "add", "bo", "--password-file", str(weak))[0] == 1
    code, secret = run("tokens", "create", "etl", "--role", "read", "--expires", "1d")
    assert code == 0
    secret = secret.strip()
    code, listed = run("tokens", "list")
    assert secret not in listed
    token_id = listed.split("\t")[0]
    assert run("users", "disable", "ada")[0] == 1  # the last admin

    auth = Auth(data / "security.sqlite")
    await auth.start()
    principal, _ = await auth.login("ada", PASSWORD, client="a")
    assert principal.role == "admin"
    assert (await auth.token_principal(secret)) is not None
    assert run("tokens", "revoke", token_id)[0] == 0
    assert (await auth.token_principal(secret)) is None
    await auth.close()

    audit = AuditStore(data / "audit.sqlite")
    entries = [(e.action, e.target, e.outcome.value) for e in audit.entries()]
    audit.close()
    assert entries == [
        ("user.create", "ada", "ok"),
        ("user.create", "bo", "rejected"),
        ("token.create", "etl", "ok"),
        ("user.update", "ada", "rejected"),
        ("token.revoke", token_id, "ok"),
    ]
    assert PASSWORD not in str(entries)
