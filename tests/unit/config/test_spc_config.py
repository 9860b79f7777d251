"""``[[analytics.spc]]``: control charts as written, errors by key."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from shopfloor.config import load_config_text
from shopfloor.config.spc import RULE_IDS
from shopfloor.errors import ConfigError
from shopfloor.server.analytics.spc_rules import ALL_RULES

CHART = '[[analytics.spc]]\nname = "bore"\ntag = "a/b/bore"\n'


def test_a_chart_with_its_defaults() -> None:
    text = CHART + 'kind = "xbar_r"\nsubgroup_size = 5\nbaseline_start = 2026-03-02T06:00:00\n'
    text += "baseline_subgroups = 25\nlsl = 73.95\nusl = 74.05\n"
    (chart,) = load_config_text(text).analytics.spc
    assert chart.rules == ["WE1", "WE2", "WE3", "WE4"]
    assert chart.baseline_start == datetime(2026, 3, 2, 6, tzinfo=UTC)
    assert (chart.alarm, chart.priority, chart.bucket_s) == (False, "medium", None)


def test_a_bucketed_chart() -> None:
    text = CHART + 'kind = "xbar_s"\nbucket = "1h"\nrules = ["N1", "N7"]\n'
    (chart,) = load_config_text(text).analytics.spc
    assert chart.bucket_s == 3600.0
    assert chart.rules == ["N1", "N7"]


def test_the_rule_ids_are_those_the_rules_module_knows() -> None:
    assert RULE_IDS == ALL_RULES


def _problem(text: str) -> str:
    with pytest.raises(ConfigError) as info:
        load_config_text(text, source="plant.toml")
    (problem,) = info.value.problems
    return problem


@pytest.mark.parametrize(
    ("lines", "words"),
    [
        ('kind = "xbar_r"', "needs subgroup_size or bucket"),
        ('kind = "xbar_r"\nsubgroup_size = 5\nbucket = "1m"', "needs subgroup_size or bucket"),
        ('kind = "xbar_r"\nsubgroup_size = 30', "use xbar_s"),
        ('kind = "imr"\nsubgroup_size = 5', "no subgroup_size or bucket"),
        ('kind = "imr"\nbaseline_end = 2026-01-01T00:00:00Z', "needs baseline_start"),
        ('kind = "imr"\nbaseline_start = 2026-01-01T00:00:00Z', "baseline_end or baseline_sub"),
        (
            'kind = "imr"\nbaseline_start = 2026-01-02T00:00:00Z\nbaseline_end = 2026-01-01',
            "after baseline_start",
        ),
        ('kind = "imr"\nlsl = 2\nusl = 1', "must be above lsl"),
        ('kind = "imr"\nrules = ["N9"]', "'WE1'"),
        ('kind = "imr"\nrules = ["N1", "N1"]', "named twice"),
        ('kind = "xbar_s"\nbucket = "1 hour"', "duration"),
        ('kind = "pchart"', "'xbar_r'"),
    ],
)
def test_invalid_charts_are_named(lines: str, words: str) -> None:
    problem = _problem(CHART + lines + "\n")
    assert "analytics.spc.0" in problem
    assert words in problem


def test_chart_names_are_unique_and_url_safe() -> None:
    chart = CHART + 'kind = "imr"\n'
    assert "named 'bore'" in _problem(chart + chart)
    assert "analytics.spc.0.name" in _problem(chart.replace('"bore"', '"a b"'))
