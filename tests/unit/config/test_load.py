"""Configuration errors name the key and the line; a valid file loads with paths resolved."""

from __future__ import annotations

import re
from pathlib import Path
from typing import get_args

import pytest
from pydantic import BaseModel

from shopfloor.config import ShopfloorConfig, load_config, load_config_text
from shopfloor.config.models import parse_duration_s
from shopfloor.errors import ConfigError

ROOT = Path(__file__).resolve().parents[3]


def test_example_config_loads_and_resolves_paths(tmp_path: Path) -> None:
    target = tmp_path / "plant.toml"
    target.write_text((ROOT / "examples" / "shopfloor.toml").read_text())
    config = load_config(target)
    assert config.simulator.enabled is True
    assert config.server.data_dir == tmp_path / "shopfloor-data"
    assert config.historian.path == tmp_path / "shopfloor-data" / "history.duckdb"


def test_empty_file_gives_defaults() -> None:
    config = load_config_text("")
    assert config.server.port == 8000
    assert config.historian.kind == "duckdb"
    assert config.simulator.enabled is False


def _problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config_text(text, source="plant.toml")
    return info.value.problems


def test_unknown_key_is_named_with_its_line() -> None:
    text = '[server]\nhost = "0.0.0.0"\n\n[historian]\nflush_intervall_s = 2\n'
    (problem,) = _problems(text)
    assert "historian.flush_intervall_s (line 5)" in problem
    assert "unknown key" in problem


def test_wrong_values_are_each_named_with_their_lines() -> None:
    text = '[server]\nport = "eighty"\n[historian]\nflush_interval_s = 0\n'
    problems = _problems(text)
    assert len(problems) == 2
    assert any("server.port (line 2)" in p and "integer" in p for p in problems)
    assert any(
        "historian.flush_interval_s (line 4)" in p and "greater than 0" in p for p in problems
    )


def test_bad_duration_names_the_accepted_forms() -> None:
    (problem,) = _problems('[simulator]\nbackfill = "yesterday"\n')
    assert "simulator.backfill (line 2)" in problem
    assert "30s" in problem


def test_unknown_historian_kind_is_named() -> None:
    (problem,) = _problems('[historian]\nkind = "oracle"\n')
    assert "historian" in problem
    assert "line 1" in problem or "line 2" in problem
    assert "duckdb" in problem


def test_toml_syntax_error_reports_the_line() -> None:
    with pytest.raises(ConfigError, match=r"not valid TOML.*line 2"):
        load_config_text("[server]\nport = = 1\n", source="plant.toml")


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "absent.toml")


@pytest.mark.parametrize(
    ("text", "seconds"), [("500ms", 0.5), ("30s", 30), ("5m", 300), ("2h", 7200), ("1d", 86400)]
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration_s(text) == seconds


def _settings(model: type[BaseModel], prefix: str = "") -> list[tuple[str, str | None]]:
    out = []
    for name, field in model.model_fields.items():
        # a section chosen by `kind` (the historian) lists the keys of every backend
        members = get_args(field.annotation) or (field.annotation,)
        sections = [m for m in members if isinstance(m, type) and issubclass(m, BaseModel)]
        if sections and len(sections) == len(members):  # an optional table is one key
            for section in sections:
                out.extend(_settings(section, f"{prefix}{name}."))
        else:
            out.append((f"{prefix}{name}", field.description))
    return list(dict.fromkeys(out))


def test_every_setting_is_described_and_documented_in_the_readme() -> None:
    readme = (ROOT / "README.md").read_text()
    documented = set(re.findall(r"`([a-z_][a-z0-9_]*(?:\.[a-z_][a-z0-9_]*)*)`", readme))
    settings = _settings(ShopfloorConfig)
    assert settings
    undescribed = [key for key, desc in settings if not desc]
    assert not undescribed, f"settings without a description: {undescribed}"
    missing = [key for key, _ in settings if key not in documented]
    assert not missing, f"settings missing from the README's configuration reference: {missing}"
