"""Edge configuration files: connectors by kind, CSV tag lists, errors by line."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import BaseModel, Field

from shopfloor.config import load_edge_config
from shopfloor.config.connectors.base import ConnectorConfigBase, TagConfig
from shopfloor.config.load import load_config_text
from shopfloor.errors import ConfigError

ROOT = Path(__file__).resolve().parents[3]


def test_example_edge_config_loads() -> None:
    config = load_edge_config(ROOT / "examples" / "edge.toml")
    assert config.edge.id == "edge-1"
    assert config.connectors[0].kind == "simulator"
    assert config.edge.data_dir == (ROOT / "examples" / "edge-data").resolve()


def _problems(text: str) -> list[str]:
    from shopfloor.config.edge import EdgeConfig

    with pytest.raises(ConfigError) as info:
        load_config_text(text, source="edge.toml", model=EdgeConfig)
    return info.value.problems


def test_unknown_connector_kind_and_bad_keys_are_named_by_line() -> None:
    text = (
        '[edge]\nid = "e1"\n\n'
        '[[connectors]]\nkind = "simulator"\nname = "a"\n\n'
        '[[connectors]]\nkind = "simulator"\nname = "b"\nsped = 3\n'
    )
    (problem,) = _problems(text)
    assert "connectors.1.sped (line 11): unknown key" in problem
    (problem,) = _problems('[edge]\nid = "e1"\n[[connectors]]\nkind = "plc5"\nname = "x"\n')
    assert "connectors.0" in problem
    assert "simulator" in problem


def test_bad_edge_id_and_url_are_named() -> None:
    problems = _problems('[edge]\nid = "has space"\n[uplink]\nurl = "ftp://x"\n')
    assert any("edge.id (line 2)" in p for p in problems)
    assert any("uplink.url (line 4)" in p and "http://" in p for p in problems)


def test_duplicate_connector_names_are_refused() -> None:
    text = '[edge]\nid = "e"\n[[connectors]]\nkind = "simulator"\nname = "a"\n'
    text += '[[connectors]]\nkind = "simulator"\nname = "a"\n'
    (problem,) = _problems(text)
    assert "unique" in problem


class _Tagged(ConnectorConfigBase):
    kind: str = "test"
    tags: list[TagConfig] = Field(default_factory=list)


class _Doc(BaseModel):
    connectors: list[_Tagged]


def test_tags_file_rows_join_inline_tags_and_errors_name_csv_line(tmp_path: Path) -> None:
    csv = tmp_path / "press.csv"
    csv.write_text(
        "name,address,data_type,scale,unit,states\n"
        "barrel_temp,hr:100,int16,0.1,degC,\n"
        "mode,hr:101,uint16,,,0=OFF;1=AUTO;2=MANUAL\n"
        "\n"
        "pressure,hr:102,float32,,bar,\n"
    )
    text = '[[connectors]]\nname = "p"\ntags_file = "press.csv"\n'
    text += '[[connectors.tags]]\nname = "inline"\naddress = "hr:1"\n'
    doc = load_config_text(text, model=_Doc, base=tmp_path)
    tags = doc.connectors[0].tags
    assert [t.name for t in tags] == ["inline", "barrel_temp", "mode", "pressure"]
    assert tags[1].scale == 0.1
    assert tags[1].data_type == "int16"
    assert tags[2].states == {"0": "OFF", "1": "AUTO", "2": "MANUAL"}

    csv.write_text("name,address,data_type\nok,hr:1,float32\nbad,hr:2,float33\n")
    with pytest.raises(ConfigError) as info:
        load_config_text(text, model=_Doc, base=tmp_path)
    (problem,) = info.value.problems
    assert "press.csv line 3, column data_type" in problem


def test_tags_file_errors(tmp_path: Path) -> None:
    text = '[[connectors]]\nname = "p"\ntags_file = "missing.csv"\n'
    with pytest.raises(ConfigError, match="cannot read"):
        load_config_text(text, model=_Doc, base=tmp_path)
    (tmp_path / "noname.csv").write_text("address,unit\nhr:1,bar\n")
    with pytest.raises(ConfigError, match="needs a 'name' column"):
        load_config_text(text.replace("missing", "noname"), model=_Doc, base=tmp_path)
    (tmp_path / "states.csv").write_text("name,states\nmode,OFF-ON\n")
    with pytest.raises(ConfigError, match=r"states\.csv line 2, column states"):
        load_config_text(text.replace("missing", "states"), model=_Doc, base=tmp_path)


def test_connector_files_are_relative_to_the_config_file(tmp_path: Path) -> None:
    conf = tmp_path / "site" / "edge.toml"
    conf.parent.mkdir()
    conf.write_text(
        '[edge]\nid = "e"\n[[connectors]]\nkind = "mqtt"\nname = "m"\nhost = "broker"\n'
        'username = "edge"\npassword_file = "/etc/shopfloor/mqtt.pw"\n'
        '[connectors.tls]\nca_file = "pki/ca.pem"\n'
    )
    (connector,) = load_edge_config(conf).connectors
    assert getattr(connector, "tls").ca_file == conf.parent / "pki" / "ca.pem"  # noqa: B009
    assert getattr(connector, "password_file") == Path("/etc/shopfloor/mqtt.pw")  # noqa: B009
