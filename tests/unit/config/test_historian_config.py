"""`[historian] kind = "postgres"`: keys, secrets kept out of the file, errors with lines."""

from __future__ import annotations

from pathlib import Path

import pytest
from psycopg.conninfo import conninfo_to_dict
from typer.testing import CliRunner

from shopfloor.cli import app
from shopfloor.config import load_config, load_config_text
from shopfloor.config.models import DuckDBHistorianSection, PostgresHistorianSection
from shopfloor.errors import ConfigError
from shopfloor.server.app import build_historian
from shopfloor.server.historian.duckdb import DuckDBHistorian
from shopfloor.server.historian.postgres import PostgresHistorian


def _problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config_text(text, source="plant.toml")
    return info.value.problems


def test_postgres_section_builds_a_connection_with_the_password_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config = load_config_text(
        '[historian]\nkind = "postgres"\nhost = "db.plant.local"\nport = 6543\n'
        'dbname = "plant"\nuser = "historian"\npassword_env = "PLANT_DB_PASSWORD"\n'
        'sslmode = "verify-full"\nschema_name = "line1"\nread_connections = 4\n'
    )
    section = config.historian
    assert isinstance(section, PostgresHistorianSection)
    monkeypatch.setenv("PLANT_DB_PASSWORD", "s3cr=t 'quoted'")
    assert conninfo_to_dict(section.connection_string()) == {
        "host": "db.plant.local",
        "port": "6543",
        "dbname": "plant",
        "user": "historian",
        "sslmode": "verify-full",
        "password": "s3cr=t 'quoted'",
    }


def test_unset_password_variable_is_a_config_error_naming_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("PLANT_DB_PASSWORD", raising=False)
    config = load_config_text(
        '[historian]\nkind = "postgres"\npassword_env = "PLANT_DB_PASSWORD"\n'
    )
    with pytest.raises(ConfigError, match="PLANT_DB_PASSWORD is not set"):
        build_historian(config)


def test_password_file_is_relative_to_the_configuration_file(tmp_path: Path) -> None:
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "db").write_text("from-a-file\nignored second line\n")
    target = tmp_path / "plant.toml"
    target.write_text(
        '[historian]\nkind = "postgres"\ndsn = "postgresql://historian@db/plant"\n'
        'password_file = "secrets/db"\n'
    )
    section = load_config(target).historian
    assert isinstance(section, PostgresHistorianSection)
    assert section.password_file == tmp_path / "secrets" / "db"
    params = conninfo_to_dict(section.connection_string())
    assert params["password"] == "from-a-file"
    assert (params["host"], params["dbname"], params["user"]) == ("db", "plant", "historian")


def test_no_password_key_leaves_it_to_libpq() -> None:
    section = load_config_text('[historian]\nkind = "postgres"\n').historian
    assert isinstance(section, PostgresHistorianSection)
    assert "password" not in conninfo_to_dict(section.connection_string())


@pytest.mark.parametrize(
    "dsn",
    ["host=db user=u password=hunter2", "postgresql://u:hunter2@db/plant"],
)
def test_password_inside_the_dsn_is_refused_with_its_line(dsn: str) -> None:
    (problem,) = _problems(
        f'[server]\nport = 8000\n[historian]\nkind = "postgres"\ndsn = "{dsn}"\n'
    )
    assert "historian.dsn (line 5)" in problem
    assert "password_env or password_file" in problem
    assert "hunter2" not in problem


def test_unknown_postgres_key_is_named_with_its_line() -> None:
    (problem,) = _problems('[historian]\nkind = "postgres"\nhost = "db"\nschema = "x"\n')
    assert "historian.schema (line 4)" in problem
    assert "unknown key" in problem


def test_duckdb_key_under_postgres_is_an_unknown_key() -> None:
    (problem,) = _problems('[historian]\nkind = "postgres"\nmemory_limit = "1GB"\n')
    assert "historian.memory_limit (line 3)" in problem


def test_dsn_and_separate_connection_keys_conflict_at_the_second_key() -> None:
    (problem,) = _problems('[historian]\nkind = "postgres"\ndsn = "host=db"\n\nuser = "u"\n')
    assert "historian.user (line 5)" in problem
    assert "give dsn or user, not both" in problem


def test_two_password_sources_conflict() -> None:
    (problem,) = _problems(
        '[historian]\nkind = "postgres"\npassword_env = "A"\npassword_file = "a.txt"\n'
    )
    assert "historian.password_file (line 4)" in problem


def test_bad_tuning_value_is_named_with_its_line() -> None:
    (problem,) = _problems('[historian]\nkind = "postgres"\nread_connections = 0\n')
    assert "historian.read_connections (line 3)" in problem


def test_config_check_names_the_bad_key_and_its_line(tmp_path: Path) -> None:
    target = tmp_path / "plant.toml"
    target.write_text('[server]\nport = 8000\n\n[historian]\nkind = "postgres"\nhots = "db"\n')
    result = CliRunner().invoke(app, ["config", "check", str(target)])
    assert result.exit_code == 2
    assert "historian.hots (line 6)" in result.output


def test_config_check_accepts_a_postgres_configuration(tmp_path: Path) -> None:
    target = tmp_path / "plant.toml"
    target.write_text('[historian]\nkind = "postgres"\nhost = "db"\npassword_env = "DB_PW"\n')
    result = CliRunner().invoke(app, ["config", "check", str(target)])
    assert result.exit_code == 0, result.output


def test_build_historian_picks_the_backend_by_kind(tmp_path: Path) -> None:
    postgres = load_config_text('[historian]\nkind = "postgres"\ndsn = "host=db"\n')
    assert isinstance(build_historian(postgres), PostgresHistorian)
    duck = load_config_text("").resolve_paths(tmp_path)
    assert isinstance(duck.historian, DuckDBHistorianSection)
    assert isinstance(build_historian(duck), DuckDBHistorian)
