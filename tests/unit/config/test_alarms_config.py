"""``[[alarms.rules]]``: rules as written, errors by key and line."""

from __future__ import annotations

import pytest

from shopfloor.config import load_config_text
from shopfloor.errors import ConfigError

RULE = '[[alarms.rules]]\ntag = "a/b/temp"\n'


def test_a_rule_with_its_defaults() -> None:
    (rule,) = load_config_text(RULE + 'kind = "H"\nlimit = 80\non_delay = "5s"\n').alarms.rules
    assert (rule.alarm_name, rule.limit, rule.deadband, rule.priority) == (
        "a/b/temp.H",
        80.0,
        0.0,
        "medium",
    )
    assert (rule.on_delay_s, rule.off_delay_s) == (5.0, 0.0)


def _problem(text: str) -> str:
    with pytest.raises(ConfigError) as info:
        load_config_text(text, source="plant.toml")
    (problem,) = info.value.problems
    return problem


@pytest.mark.parametrize(
    ("lines", "key", "words"),
    [
        ('kind = "HHH"\nlimit = 1', "alarms.rules.0.kind (line 3)", "'HH'"),
        ('kind = "H"\nlimit = 1\non_delay = "2d"', "alarms.rules.0.on_delay (line 5)", "1d"),
        (
            'kind = "H"\nlimit = 1\ndeadband = -1',
            "alarms.rules.0.deadband (line 5)",
            "greater than or equal to 0",
        ),
        ('kind = "H"\nlimit = 1\npriority = "urgent"', "alarms.rules.0.priority", "critical"),
        ('kind = "H"', "alarms.rules.0", "kind H needs a limit"),
        ('kind = "bad_quality"\nlimit = 1', "alarms.rules.0", "kind bad_quality takes no limit"),
    ],
)
def test_each_bad_rule_is_named(lines: str, key: str, words: str) -> None:
    problem = _problem(RULE + lines + "\n")
    assert key in problem
    assert words in problem


def test_two_alarms_with_one_name_are_refused() -> None:
    problem = _problem(RULE + 'kind = "H"\nlimit = 1\n' + RULE + 'kind = "H"\nlimit = 2\n')
    assert "two alarms are named 'a/b/temp.H'; give one a name" in problem


def test_an_expression_rule_is_compiled_when_loaded() -> None:
    text = RULE + 'kind = "expression"\nexpression = "temp > 80 and run == 1"\n'
    text += 'inputs = { temp = "a/b/temp", run = "a/b/state" }\n'
    (rule,) = load_config_text(text).alarms.rules
    assert rule.inputs == {"temp": "a/b/temp", "run": "a/b/state"}
    problem = _problem(text.replace("run == 1", "running == 1"))
    assert "alarms.rules.0 (line 1)" in problem
    assert "unknown name 'running' at column 15 (inputs: run, temp)" in problem
    assert "kind expression takes no limit" in _problem(text + "limit = 1\n")
    assert "go with kind expression" in _problem(
        RULE + 'kind = "H"\nlimit = 1\ninputs = { a = "x" }\n'
    )


@pytest.mark.parametrize(
    "historian",
    ["", '[historian]\nkind = "postgres"\ndsn = "dbname=x"\n'],  # DuckDB; PostgreSQL unshared
)
def test_partitioned_alarms_need_a_shared_postgres_historian(historian: str) -> None:
    problem = _problem(historian + "[alarms]\npartitions = 8\n")
    assert "alarms.partitions" in problem
    assert "historian.shared = true" in problem


def test_partitioned_alarms_with_a_shared_postgres_historian() -> None:
    text = '[historian]\nkind = "postgres"\ndsn = "dbname=x"\nshared = true\n'
    assert load_config_text(text + "[alarms]\npartitions = 8\n").alarms.partitions == 8
