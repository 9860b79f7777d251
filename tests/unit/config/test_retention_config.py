"""``[historian.retention]``: every key validated, errors named with key and line."""

from __future__ import annotations

import pytest

from shopfloor.config import load_config_text
from shopfloor.config.models import PostgresHistorianSection
from shopfloor.config.retention import parse_bytes, parse_retention_s
from shopfloor.errors import ConfigError

GOOD = """\
[historian]
kind = "{kind}"

[historian.retention]
raw = "90d"
rollup_1m = "400d"
rollup_1h = ""
disk_budget = "20GB"
interval = "5m"

[[historian.retention.rules]]
match = "acme/plant-1/utilities/**"
raw = "30d"

[[historian.retention.rules]]
match = "acme/plant-1/quality"
raw = ""
"""


@pytest.mark.parametrize("kind", ["duckdb", "postgres"])
def test_both_historian_sections_take_the_retention_table(kind: str) -> None:
    config = load_config_text(GOOD.format(kind=kind))
    retention = config.historian.retention
    assert isinstance(config.historian, PostgresHistorianSection) == (kind == "postgres")
    assert retention.raw_s == 90 * 86400
    assert retention.rollup_1m_s == 400 * 86400
    assert retention.rollup_1h_s is None
    assert retention.disk_budget_bytes == 20 * 10**9
    assert retention.interval_s == 300
    assert [(r.match, r.raw_s) for r in retention.rules] == [
        ("acme/plant-1/utilities/**", 30 * 86400),
        ("acme/plant-1/quality", None),
    ]


def test_defaults_keep_everything() -> None:
    retention = load_config_text("").historian.retention
    assert (retention.raw_s, retention.rollup_1m_s, retention.rollup_1h_s) == (None, None, None)
    assert retention.disk_budget_bytes is None
    assert retention.rules == []


def _problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config_text(text, source="plant.toml")
    return info.value.problems


@pytest.mark.parametrize(
    ("line", "key", "words"),
    [
        ('raw = "6m"', "historian.retention.raw", "183d"),
        ('raw = "ninety days"', "historian.retention.raw", "30d"),
        ('raw = "30m"', "historian.retention.raw", "183d"),
        ('rollup_1m = "10s"', "historian.retention.rollup_1m", "12h"),
        ('rollup_1h = "0.5h"', "historian.retention.rollup_1h", "at least 1h"),
        ('disk_budget = "20 gigs"', "historian.retention.disk_budget", "20GB"),
        ('disk_budget = "0MB"', "historian.retention.disk_budget", "more than 0"),
        ('interval = "0s"', "historian.retention.interval", "between 1s and 1d"),
        ("raw = 90", "historian.retention.raw", "string"),
        ('disk_budgets = "1GB"', "historian.retention.disk_budgets", "unknown key"),
    ],
)
def test_each_bad_value_is_named_with_its_key_and_line(line: str, key: str, words: str) -> None:
    (problem,) = _problems(f"[historian]\n\n[historian.retention]\n{line}\n")
    assert f"{key} (line 4)" in problem
    assert words in problem


def test_a_bad_rule_is_named_by_its_index_and_line() -> None:
    text = (
        "[historian.retention]\n"
        '[[historian.retention.rules]]\nmatch = "a/**"\nraw = "1d"\n'
        '[[historian.retention.rules]]\nmatch = "a//b"\nraw = "1d"\n'
        '[[historian.retention.rules]]\nmatch = "c"\nkeep = "1d"\n'
    )
    problems = _problems(text)
    assert any("historian.retention.rules.1.match (line 6)" in p for p in problems)
    assert any("empty segment" in p for p in problems)
    assert any("historian.retention.rules.2.keep (line 10)" in p for p in problems)
    assert any("historian.retention.rules.2.raw" in p and "required" in p for p in problems)


@pytest.mark.parametrize(
    ("text", "size"),
    [("500MB", 500 * 10**6), ("20GB", 20 * 10**9), ("1.5TiB", int(1.5 * 2**40)), ("3 mb", 3e6)],
)
def test_sizes_in_decimal_and_binary_units(text: str, size: float) -> None:
    assert parse_bytes(text) == int(size)


@pytest.mark.parametrize(
    ("text", "seconds"), [("12h", 43200), ("30d", 2592000), ("8w", 4838400), ("2y", 63072000)]
)
def test_retentions_in_hours_days_weeks_years(text: str, seconds: int) -> None:
    assert parse_retention_s(text) == seconds
