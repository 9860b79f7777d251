"""`[historian.compaction]` and `[historian.rollups]`: defaults, units, errors by key, line."""

from __future__ import annotations

import pytest

from shopfloor.config import load_config_text
from shopfloor.errors import ConfigError


@pytest.mark.parametrize("kind", ["duckdb", "postgres"])
def test_both_backends_take_both_tables(kind: str) -> None:
    config = load_config_text(
        f'[historian]\nkind = "{kind}"\n\n'
        '[historian.compaction]\ninterval = "30m"\ngrace = "1h"\n\n'
        '[historian.rollups]\nenabled = false\ninterval = "90s"\ngrace = "500ms"\n'
    )
    compaction, rollups = config.historian.compaction, config.historian.rollups
    assert (compaction.interval_s, compaction.grace_s) == (1800, 3600)
    assert (rollups.enabled, rollups.interval_s, rollups.grace_s) == (False, 90, 0.5)


def test_defaults_compact_every_ten_minutes_and_roll_up_every_minute() -> None:
    historian = load_config_text("").historian
    assert (historian.compaction.interval_s, historian.compaction.grace_s) == (600, 600)
    assert historian.rollups.enabled
    assert (historian.rollups.interval_s, historian.rollups.grace_s) == (60, 120)


def test_compaction_off_has_no_interval() -> None:
    config = load_config_text("[historian.compaction]\nenabled = false\n")
    assert config.historian.compaction.interval_s is None


@pytest.mark.parametrize(
    ("table", "line", "key", "words"),
    [
        ("compaction", 'interval = "0s"', "historian.compaction.interval", "between 1s and 1d"),
        ("compaction", 'interval = "ten minutes"', "historian.compaction.interval", "30s, 5m"),
        ("compaction", 'grace = "8d"', "historian.compaction.grace", "between 0s and 7d"),
        ("compaction", "interval = 600", "historian.compaction.interval", "string"),
        ("rollups", 'grace = "2d"', "historian.rollups.grace", "between 0s and 1d"),
        ("rollups", 'enabled = "sometimes"', "historian.rollups.enabled", "boolean"),
        ("rollups", 'intervall = "1m"', "historian.rollups.intervall", "unknown key"),
    ],
)
def test_each_bad_value_is_named_with_its_key_and_line(
    table: str, line: str, key: str, words: str
) -> None:
    with pytest.raises(ConfigError) as info:
        load_config_text(f"[historian]\n\n[historian.{table}]\n{line}\n", source="plant.toml")
    (problem,) = info.value.problems
    assert f"{key} (line 4)" in problem
    assert words in problem
