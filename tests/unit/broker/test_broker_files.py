"""``shopfloor broker config``: Mosquitto-compatible hashes, credentials written once and
private, no password in the output, bad options named."""

from __future__ import annotations

import shutil
import stat
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from shopfloor.broker import BrokerPlan, hash_password, verify_password, write_broker_files
from shopfloor.broker.passwords import password_line
from shopfloor.cli import app
from shopfloor.errors import ConfigError


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_hashes_are_what_mosquitto_passwd_writes() -> None:
    line = password_line("edge", "s3cret")
    user, hashed = line.split(":", 1)
    assert user == "edge"
    assert hashed.startswith("$7$101$")
    assert verify_password(hashed, "s3cret")
    assert not verify_password(hashed, "s3cret ")
    assert hash_password("x", salt=b"\0" * 12) == hash_password("x", salt=b"\0" * 12)


@pytest.mark.skipif(shutil.which("mosquitto_passwd") is None, reason="mosquitto_passwd missing")
def test_a_hash_made_by_mosquitto_passwd_verifies(tmp_path: Path) -> None:
    """The other direction: Mosquitto's own tool's hash is read the same way, so both agree
    on salt, iterations, digest and base64 (``-U`` hashes a clear-text file in place)."""
    file = tmp_path / "pw"
    file.write_text("edge:pa ss wörd\n")  # white space and non-ASCII (-U splits at ":")
    subprocess.run(["mosquitto_passwd", "-U", str(file)], check=True, capture_output=True)
    user, hashed = file.read_text().strip().split(":", 1)
    assert user == "edge"
    assert verify_password(hashed, "pa ss wörd")
    assert not verify_password(hashed, "pa ss word")


def test_user_names_that_would_break_the_file_are_refused() -> None:
    for bad in ["", "a:b", "a\nb"]:
        with pytest.raises(ValueError, match="user"):
            password_line(bad, "x")
    with pytest.raises(ValueError, match="hash"):
        verify_password("$6$abc$def", "x")


def test_credentials_are_private_and_written_once(tmp_path: Path) -> None:
    out = tmp_path / "broker"
    first = write_broker_files(out, BrokerPlan(edges=["a"]))
    assert sorted(first.created) == ["shopfloor-edge-a", "shopfloor-platform"]
    secret_a = first.credentials["shopfloor-edge-a"].read_text()
    for path in [first.passwords, *first.credentials.values()]:
        assert _mode(path) == 0o600, path
    assert _mode(out / "credentials") == 0o700
    assert secret_a.strip() not in first.passwords.read_text()

    # again with one more edge: a keeps its password, b gets one
    second = write_broker_files(out, BrokerPlan(edges=["a", "b"]))
    assert second.created == ["shopfloor-edge-b"]
    assert second.credentials["shopfloor-edge-a"].read_text() == secret_a
    lines = dict(line.split(":", 1) for line in second.passwords.read_text().splitlines())
    assert verify_password(lines["shopfloor-edge-a"], secret_a.strip())
    assert set(lines) == {"shopfloor-platform", "shopfloor-edge-a", "shopfloor-edge-b"}

    # rotating a replaces its password; leaving b out stops admitting b
    third = write_broker_files(out, BrokerPlan(edges=["a"], rotate=["shopfloor-edge-a"]))
    assert third.created == ["shopfloor-edge-a"]
    assert third.credentials["shopfloor-edge-a"].read_text() != secret_a
    assert "shopfloor-edge-b" not in third.passwords.read_text()
    assert "shopfloor-edge-b" not in third.acl.read_text()


def test_an_emptied_credential_is_not_silently_replaced(tmp_path: Path) -> None:
    out = tmp_path / "broker"
    files = write_broker_files(out, BrokerPlan(edges=["a"]))
    files.credentials["shopfloor-edge-a"].write_text("")
    with pytest.raises(ConfigError, match=r"shopfloor-edge-a\.password is empty"):
        write_broker_files(out, BrokerPlan(edges=["a"]))


def test_the_acl_confines_each_edge_to_its_own_topics(tmp_path: Path) -> None:
    files = write_broker_files(
        tmp_path,
        BrokerPlan(
            edges=["press-1"],
            server_users=["ingest-1", "ingest-2"],
            topic_root="acme/mqtt",
            uns_root="uns",
            sparkplug_node="acme/plant-1",
        ),
    )
    acl = files.acl.read_text()
    edge = acl.split("user shopfloor-edge-press-1\n", 1)[1].strip().splitlines()
    assert edge == [
        "topic write acme/mqtt/edges/press-1/batches",
        "topic write acme/mqtt/edges/press-1/tags",
        "topic write acme/mqtt/edges/press-1/status",
        "topic write acme/mqtt/edges/press-1/writables",
        "topic write acme/mqtt/edges/press-1/results",
        "topic read acme/mqtt/edges/press-1/acks",
        "topic read acme/mqtt/cmd/press-1/#",
    ]
    for server in ("ingest-1", "ingest-2"):
        block = acl.split(f"user {server}\n", 1)[1].split("\n\n", 1)[0].splitlines()
        assert "topic write acme/mqtt/edges/+/acks" in block
        assert "topic write acme/mqtt/cmd/#" in block
        assert "topic write acme/mqtt/live/+" in block
        assert "topic read acme/mqtt/live/+" in block
        assert "topic read $share/+/acme/mqtt/edges/+/batches" in block
        assert "topic write uns/#" in block
        assert "topic write spBv1.0/acme/DDATA/plant-1/+" in block
        assert "topic read spBv1.0/acme/NCMD/plant-1" in block
    conf = files.conf.read_text().splitlines()
    assert "allow_anonymous false" in conf
    assert f"password_file {files.passwords.absolute()}" in conf
    assert f"acl_file {files.acl.absolute()}" in conf


@pytest.mark.parametrize(
    ("plan", "option"),
    [
        (BrokerPlan(edges=["a/b"]), "edge"),
        (BrokerPlan(edges=["+"]), "edge"),
        (BrokerPlan(edges=[]), "edge"),
        (BrokerPlan(edges=["a"], server_users=["x y"]), "server-user"),
        (BrokerPlan(edges=["a"], server_users=[]), "server-user"),
        (BrokerPlan(edges=["a"], topic_root="a/#"), "topic-root"),
        (BrokerPlan(edges=["a"], topic_root="a b"), "topic-root"),
        (BrokerPlan(edges=["a"], uns_root="/x"), "uns-root"),
        (BrokerPlan(edges=["a"], sparkplug_node="only-group"), "sparkplug-node"),
        (BrokerPlan(edges=["a"], rotate=["shopfloor-edge-b"]), "rotate"),
        (BrokerPlan(edges=["a", "a"]), "named twice"),
        (BrokerPlan(edges=["a"], server_users=["shopfloor-edge-a"]), "named twice"),
    ],
)
def test_bad_options_are_named(tmp_path: Path, plan: BrokerPlan, option: str) -> None:
    with pytest.raises(ValueError, match=option):
        write_broker_files(tmp_path, plan)
    assert not (tmp_path / "passwords").exists()


def test_the_command_never_prints_a_password(tmp_path: Path) -> None:
    out = tmp_path / "broker"
    result = CliRunner().invoke(
        app, ["broker", "config", "--out", str(out), "--edge", "a", "--server-user", "plat"]
    )
    assert result.exit_code == 0, result.output
    for name in ("shopfloor-edge-a", "plat"):
        secret = (out / "credentials" / f"{name}.password").read_text().strip()
        assert secret not in result.output
        assert str(out / "credentials" / f"{name}.password") in result.output
    bad = CliRunner().invoke(app, ["broker", "config", "--out", str(out), "--edge", "a/b"])
    assert bad.exit_code == 2
    assert "edge:" in bad.output
