"""Scale-out settings: `[ingest.mqtt] shared_group`, `historian.shared`, and what
`shopfloor ingest` refuses (with the key named)."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from shopfloor.cli import app
from shopfloor.config import load_config_text
from shopfloor.config.models import PostgresHistorianSection
from shopfloor.errors import ConfigError
from shopfloor.server.worker import check_worker_config, worker_client_id

POSTGRES = '[historian]\nkind = "postgres"\nhost = "db"\nshared = true\n'


def test_shared_group_shares_batches_and_status_but_not_the_retained_tags() -> None:
    config = load_config_text('[ingest.mqtt]\nshared_group = "ingest"\n')
    mqtt = config.ingest.mqtt
    assert mqtt.subscription("batches") == "$share/ingest/shopfloor/v1/edges/+/batches"
    assert mqtt.subscription("status") == "$share/ingest/shopfloor/v1/edges/+/status"
    assert mqtt.subscription("tags") == "shopfloor/v1/edges/+/tags"
    plain = load_config_text("").ingest.mqtt
    assert plain.subscription("batches") == "shopfloor/v1/edges/+/batches"


@pytest.mark.parametrize("group", ["a/b", "+", "#", "x#"])
def test_a_shared_group_must_be_one_plain_topic_level(group: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config_text(f'[ingest.mqtt]\nshared_group = "{group}"\n', source="p.toml")
    assert "ingest.mqtt.shared_group" in str(info.value)


def test_historian_shared_is_a_postgres_setting() -> None:
    section = load_config_text(POSTGRES).historian
    assert isinstance(section, PostgresHistorianSection)
    assert section.shared
    with pytest.raises(ConfigError):
        load_config_text("[historian]\nshared = true\n")  # DuckDB: one process by nature


def test_a_worker_refuses_duckdb_and_an_unshared_postgres_naming_the_key() -> None:
    with pytest.raises(ConfigError, match=r"^historian\.kind: .*postgres"):
        check_worker_config(load_config_text(""))
    with pytest.raises(ConfigError, match=r"^historian\.shared: "):
        check_worker_config(load_config_text('[historian]\nkind = "postgres"\nhost = "db"\n'))
    check_worker_config(load_config_text(POSTGRES))


def test_worker_client_ids() -> None:
    alone = load_config_text(POSTGRES)
    assert worker_client_id(alone) == "shopfloor-platform"
    assert worker_client_id(alone, "ingest-7") == "ingest-7"
    quick = load_config_text(
        POSTGRES + '[ingest.mqtt]\nshared_group = "ingest"\nsession_expiry = "0s"\n'
    )
    assert worker_client_id(quick).startswith("shopfloor-platform-")
    assert worker_client_id(quick) != "shopfloor-platform"
    persistent = load_config_text(POSTGRES + '[ingest.mqtt]\nshared_group = "ingest"\n')
    assert worker_client_id(persistent, "ingest-1") == "ingest-1"
    with pytest.raises(ConfigError, match=r"^ingest\.mqtt\.shared_group: .*--client-id"):
        worker_client_id(persistent)


def test_shopfloor_ingest_with_duckdb_exits_2_naming_the_key(tmp_path: Path) -> None:
    config = tmp_path / "platform.toml"
    config.write_text('[server]\ndata_dir = "data"\n')
    result = CliRunner().invoke(app, ["ingest", "--config", str(config)])
    assert result.exit_code == 2
    assert "historian.kind" in result.output


def test_analytics_partitions_need_the_shared_historian_naming_the_key() -> None:
    with pytest.raises(ConfigError, match=r"analytics\.partitions"):
        load_config_text("[analytics]\npartitions = 8\n")
    with pytest.raises(ConfigError, match=r"analytics\.partitions"):
        load_config_text(
            '[historian]\nkind = "postgres"\nhost = "db"\n[analytics]\npartitions = 8\n'
        )
    assert load_config_text(POSTGRES + "[analytics]\npartitions = 8\n").analytics.partitions == 8
    assert load_config_text("").analytics.partitions == 0
