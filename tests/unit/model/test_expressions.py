"""The alarm expression language: what it computes, and what it refuses."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest

from shopfloor.model.expressions import (
    compile_expression,
    compile_window_expression,
    expression_names,
)

NAN = math.nan


def run(text: str, **columns: list[float]) -> list[bool]:
    expression = compile_expression(text, set(columns))
    return expression.evaluate({k: np.array(v, float) for k, v in columns.items()}).tolist()


def test_comparisons_logic_arithmetic_and_functions() -> None:
    a, b = [1.0, 5.0, 9.0, NAN], [2.0, 2.0, 2.0, 2.0]
    assert run("a > 4", a=a) == [False, True, True, False]  # NaN compares false
    assert run("a > 4 and not b == 3", a=a, b=b) == [False, True, True, False]
    assert run("1 < a <= 5 or b * 4 < a", a=a, b=b) == [False, True, True, False]
    assert run("abs(a - 10) < 2", a=a) == [False, False, True, False]
    assert run("max(a, b, 3) == 3", a=a, b=b) == [True, False, False, False]
    assert run("min(a, b) / 2 == 0.5", a=a, b=b) == [True, False, False, False]
    assert run("a and true", a=[0.0, 2.0]) == [False, True]
    assert run("-a < -4", a=a) == [False, True, True, False]


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("temp > 80", "unknown name 'temp' at column 1 (inputs: a)"),
        ("__import__('os').system('x')", "Call is not allowed"),
        ("__import__('os')", "function '__import__' is not allowed"),
        ("a.real > 1", "Attribute is not allowed"),
        ("[a][0] > 1", "Subscript is not allowed"),
        ("(lambda: 1)()", "is not allowed"),
        ("a ** 2 > 1", "BinOp is not allowed"),
        ("a in (1, 2)", "only < <= > >= == != compare"),
        ("'x' == a", "Constant is not allowed"),
        ("a >", "not an expression"),
        ("abs(a, a)", "abs takes 1 to 1 arguments"),
    ],
)
def test_anything_else_is_refused_with_its_place(text: str, words: str) -> None:
    with pytest.raises(ValueError, match=re.escape(words)):
        compile_expression(text, {"a"})


def test_values_are_numbers_for_calculated_tags() -> None:
    p, q = np.array([3.0, 0.0, -1.0]), np.array([4.0, 0.0, 0.0])
    expression = compile_expression("p / sqrt(p * p + q * q)", {"p", "q"})
    out = expression.values({"p": p, "q": q})
    np.testing.assert_allclose(out, [0.6, NAN, -1.0], equal_nan=True)
    assert compile_expression("p > 0", {"p"}).values({"p": p}).tolist() == [1.0, 0.0, 0.0]


def test_expression_names_are_its_inputs_not_its_functions_or_constants() -> None:
    assert expression_names("sqrt(a * a) + max(b, 1) > c and true") == {"a", "b", "c"}


def test_a_window_expression_is_an_expression_over_aggregates() -> None:
    window = compile_window_expression(
        "(last(count_) - first(count_)) / avg(p) + last(count_)", {"count_", "p"}
    )
    assert [(agg, tag) for _, agg, tag in window.terms] == [
        ("last", "count_"),
        ("first", "count_"),
        ("avg", "p"),
    ]
    values = {
        alias: np.array([v])
        for (alias, _, _), v in zip(window.terms, [10.0, 4.0, 2.0], strict=True)
    }
    assert window.expression.values(values).tolist() == [13.0]


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("p + 1", "'p' at column 1 needs an aggregate"),
        ("avg(z)", "unknown tag 'z' in avg() at column 1"),
        ("avg(p, p)", "avg() takes one tag name"),
        ("median(p)", "function 'median' is not allowed"),
        ("2 * 3", "at least one aggregate"),
        ("avg(p", "not an expression"),
    ],
)
def test_a_window_expression_refuses_with_its_place(text: str, words: str) -> None:
    with pytest.raises(ValueError, match=re.escape(words)):
        compile_window_expression(text, {"p"})
