"""The deployment examples under deploy/ are usable as they stand.

No container runtime or systemd is started here. What can be checked is: every config file
loads with the loaders `shopfloor config check` uses (and the workers' own check); the
compose file parses, and every command of its shopfloor services and of the systemd units
is a real `shopfloor` command line that the CLI parses (options included); the volumes it
mounts exist; the units carry their hardening and pass `systemd-analyze verify` and
`systemd-analyze security` where systemd is installed; the Containerfile installs from the
hash-pinned locks and runs as a non-root user.
"""

from __future__ import annotations

import configparser
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from shopfloor.cli import app
from shopfloor.config import load_config, load_edge_config
from shopfloor.server.worker import check_worker_config

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
SYSTEMD = DEPLOY / "systemd"
UNITS = sorted(SYSTEMD.glob("*.service"))
CONFIGS = sorted(DEPLOY.rglob("*.toml"))
HARDENING = {
    "NoNewPrivileges": "yes",
    "ProtectSystem": "strict",
    "ProtectHome": "yes",
    "PrivateTmp": "yes",
    "CapabilityBoundingSet": "",
    "MemoryDenyWriteExecute": "yes",
    "RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6 AF_NETLINK",
    "SystemCallFilter": "@system-service",
}


class CliRefusedError(AssertionError):
    """The CLI's parser refused a command line."""


def _parse_cli(argv: list[str]) -> tuple[str, dict[str, str]]:
    """Check that the CLI parses ``shopfloor ARGV`` (command and option names and arity,
    through the real parser: ``--help`` stops it right before running); return the
    command and the ``--option value`` pairs."""
    result = CliRunner().invoke(app, [*argv, "--help"])
    if result.exit_code != 0 or f"Usage: shopfloor {argv[0]} " not in result.output:
        raise CliRefusedError(f"shopfloor {' '.join(argv)}: {result.output}")
    options = {
        argv[i].removeprefix("--").replace("-", "_"): argv[i + 1]
        for i in range(1, len(argv) - 1)
        if argv[i].startswith("--")
    }
    return argv[0], options


def _unit(path: Path) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None, delimiters=("=",))
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(path)
    return parser


def _compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    return data


def test_the_cli_parser_refuses_what_the_cli_refuses() -> None:
    _parse_cli(["ingest", "--config", "x.toml", "--client-id", "w1"])
    with pytest.raises(CliRefusedError):
        _parse_cli(["ingest", "--config", "x.toml", "--worker-id", "w1"])
    with pytest.raises(CliRefusedError):
        _parse_cli(["serve", "--config", "x.toml"])


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: str(p.relative_to(DEPLOY)))
def test_every_config_file_loads(path: Path) -> None:
    if "[edge]" in path.read_text().splitlines():
        load_edge_config(path)
        return
    config = load_config(path)
    check_worker_config(config)  # the same file serves the ingest workers


def test_compose_runs_server_two_workers_broker_and_database() -> None:
    compose = _compose()
    services = compose["services"]
    assert set(services) == {"server", "ingest-1", "ingest-2", "mosquitto", "postgres"}
    client_ids = set()
    for name in ("server", "ingest-1", "ingest-2"):
        service = services[name]
        assert service["build"]["dockerfile"] == "deploy/Containerfile"
        assert (DEPLOY / service["build"]["context"] / service["build"]["dockerfile"]).is_file()
        command, options = _parse_cli(service["command"])
        assert command == ("server" if name == "server" else "ingest")
        config = Path(options["config"])
        mounts = {m.split(":")[1]: m.split(":")[0] for m in service["volumes"]}
        source = DEPLOY / mounts[str(config)]
        assert source.is_file(), source
        loaded = load_config(source)
        check_worker_config(loaded)
        assert loaded.historian.kind == "postgres"
        assert loaded.historian.host == "postgres"  # type: ignore[union-attr]
        assert loaded.ingest.mqtt.host == "mosquitto"
        secrets = {f"/run/secrets/{s}" for s in service["secrets"]}
        assert str(loaded.historian.password_file) in secrets  # type: ignore[union-attr]
        assert str(loaded.ingest.mqtt.password_file) in secrets
        assert service["read_only"] is True
        assert service["cap_drop"] == ["ALL"]
        if name != "server":
            client_ids.add(options["client_id"])
    assert len(client_ids) == 2, "each worker needs its own MQTT client id"
    broker = services["mosquitto"]
    conf = next(v.split(":")[0] for v in broker["volumes"] if v.endswith("mosquitto.conf:ro"))
    text = (DEPLOY / conf).read_text()
    assert "allow_anonymous false" in text
    for secret in compose["secrets"].values():
        assert not (DEPLOY / secret["file"]).exists() or secret["file"].startswith(
            "./compose/secrets/"
        )
    ignored = subprocess.run(
        ["git", "check-ignore", "-q", "deploy/compose/secrets/db_password"], cwd=ROOT, check=False
    )
    assert ignored.returncode == 0, "the secrets folder must be ignored by git"


@pytest.mark.parametrize("path", UNITS, ids=lambda p: p.name)
def test_every_unit_runs_a_real_command_hardened_with_a_watchdog(path: Path) -> None:
    unit = _unit(path)
    service = unit["Service"]
    assert service["Type"] == "notify"
    assert re.fullmatch(r"\d+s", service["WatchdogSec"])
    for key, value in HARDENING.items():
        assert service.get(key) == value or (
            key == "SystemCallFilter" and value in path.read_text()
        ), (path.name, key)
    assert service["User"] != "root"
    argv = service["ExecStart"].split()
    assert argv[0].endswith("/bin/shopfloor")
    command, options = _parse_cli([a.replace("%H", "host").replace("%i", "1") for a in argv[1:]])
    assert command in {"server", "edge", "ingest"}
    config = Path(options["config"])
    example = SYSTEMD / config.name
    assert example.is_file(), f"{path.name} reads {config}: deploy/systemd/{config.name}"
    writable = service.get("ReadWritePaths")
    if command == "server":
        assert writable == str(load_config(example).server.data_dir)
    if command == "edge":
        assert writable == str(load_edge_config(example).edge.data_dir)


@pytest.fixture
def units_with_local_binary(tmp_path: Path) -> Path:
    """The units with ExecStart pointing at this checkout's shopfloor (verify checks it)."""
    binary = shutil.which("shopfloor") or str(Path(sys.executable).parent / "shopfloor")
    for unit in [*UNITS, *SYSTEMD.glob("*.target")]:
        text = unit.read_text().replace("/opt/shopfloor/venv/bin/shopfloor", binary)
        (tmp_path / unit.name).write_text(text)
    template = tmp_path / "shopfloor-ingest@.service"
    (tmp_path / "shopfloor-ingest@1.service").write_text(template.read_text())
    return tmp_path


def _systemd_analyze() -> str:
    tool = shutil.which("systemd-analyze")
    if tool is None:
        pytest.skip("systemd-analyze is not installed")
    return tool


def test_units_pass_systemd_analyze_verify(units_with_local_binary: Path) -> None:
    tool = _systemd_analyze()
    names = ["shopfloor-server.service", "shopfloor-edge.service", "shopfloor-ingest@1.service"]
    result = subprocess.run(
        [tool, "verify", *names, "shopfloor-ingest.target"],
        cwd=units_with_local_binary,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    # unknown keys and bad values are warnings: none may be printed for our units
    ours = [line for line in result.stderr.splitlines() if "shopfloor" in line]
    assert ours == [], result.stderr


def test_units_expose_little_by_systemd_analyze_security(units_with_local_binary: Path) -> None:
    tool = _systemd_analyze()
    for name in (
        "shopfloor-server.service",
        "shopfloor-edge.service",
        "shopfloor-ingest@1.service",
    ):
        result = subprocess.run(
            [tool, "security", "--offline=true", "--no-pager", name],
            cwd=units_with_local_binary,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        found = re.search(
            r"Overall exposure level for \S+: (\d+\.\d+)", result.stdout + result.stderr
        )
        if found is None:
            pytest.skip(f"systemd-analyze security --offline is not supported: {result.stderr}")
        # 0 is fully locked down, 10 unprotected; systemd calls below 2 "OK"
        assert float(found[1]) < 2.0, (name, result.stdout)


def test_the_containerfile_installs_the_locks_as_a_non_root_user() -> None:
    text = (DEPLOY / "Containerfile").read_text()
    froms = re.findall(r"^FROM (\S+)", text, re.M)
    assert "docker.io/library/python:3.11-slim-bookworm" in text
    assert froms[-1] == "${PYTHON_IMAGE}"
    assert "--require-hashes --only-binary=:all: -r requirements/runtime.lock" in text
    assert "--require-hashes -r requirements/build.lock" in text
    assert "npm ci --ignore-scripts" in text
    users = re.findall(r"^USER (\S+)", text, re.M)
    assert users, "the image must not run as root"
    assert users[-1].split(":")[0] not in {"0", "root"}
    ignore = (DEPLOY / "Containerfile.dockerignore").read_text().splitlines()
    included = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    assert "*" in ignore, "the build context sends only what is copied"
    for copied in re.findall(r"^COPY (?!--from)(.+) \S+$", text, re.M):
        for source in copied.split():
            assert (ROOT / source).exists(), source
            assert source.rstrip("/") in included, f"{source} is not in the build context"
