"""A small, safe expression language for alarm conditions and calculated tags.

``oil_temp > 80 and state == 1``, ``abs(flow - flow_sp) > 5 or not pump_ok``: names are
the rule's inputs (tags), numbers and ``true``/``false`` are constants; the operators
are ``and or not``, comparisons (chained as in Python), ``+ - * /`` and the functions
``abs``, ``min``, ``max``, ``sqrt``. The text is parsed by Python's own parser into a
tree and only these node kinds are accepted; it is never handed to ``eval``. A compiled
expression evaluates whole numpy columns at once (one value per input per moment):
:meth:`Expression.evaluate` as a condition (alarms), :meth:`Expression.values` as a
number (calculated tags).

A comparison with a NaN input is false; the alarm engine does not evaluate an expression
while one of its inputs has no usable value (see ``ExpressionConditions``).

A **window expression** (:func:`compile_window_expression`, for metrics) is the same
language over aggregates of tags instead of tags: ``last(part_count) - first(part_count)``,
``avg(power_kw) / max(power_kw)``. Each ``aggregate(tag)`` call becomes one input of a
plain expression, so the evaluator is the one above.
"""

from __future__ import annotations

import ast
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

__all__ = [
    "WINDOW_AGGREGATES",
    "Expression",
    "WindowExpression",
    "compile_expression",
    "compile_window_expression",
    "expression_names",
]

Array = npt.NDArray[np.float64]
_Fn = Callable[[Mapping[str, Array]], Array]

_COMPARE: dict[type[ast.cmpop], Callable[[Array, Array], Array]] = {
    ast.Gt: np.greater,
    ast.GtE: np.greater_equal,
    ast.Lt: np.less,
    ast.LtE: np.less_equal,
    ast.Eq: np.equal,
    ast.NotEq: np.not_equal,
}
_ARITH: dict[type[ast.operator], Callable[[Array, Array], Array]] = {
    ast.Add: np.add,
    ast.Sub: np.subtract,
    ast.Mult: np.multiply,
    ast.Div: np.divide,
}
_FUNCTIONS: dict[str, tuple[int, int, Callable[..., Array]]] = {
    "abs": (1, 1, np.abs),
    "min": (2, 8, lambda *a: np.minimum.reduce(np.broadcast_arrays(*a))),
    "max": (2, 8, lambda *a: np.maximum.reduce(np.broadcast_arrays(*a))),
    "sqrt": (1, 1, np.sqrt),
}
_CONSTANTS = {"true": 1.0, "false": 0.0}


@dataclass(frozen=True, slots=True)
class Expression:
    """A compiled expression: ``evaluate`` takes one column per input name."""

    text: str
    names: frozenset[str]
    _fn: _Fn

    def evaluate(self, inputs: Mapping[str, Array]) -> npt.NDArray[np.bool_]:
        """The condition per row (NaN or a non-zero value: see the module docstring)."""
        with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
            out = np.asarray(self._fn(inputs), dtype=np.float64)
        truth: npt.NDArray[np.bool_] = np.nan_to_num(out, nan=0.0) != 0.0
        return truth

    def values(self, inputs: Mapping[str, Array]) -> Array:
        """The value per row as a number (a comparison is 1.0 or 0.0); NaN or ±inf where
        it has none (a NaN input, a division by zero, the root of a negative number)."""
        with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
            out: Array = np.asarray(self._fn(inputs), dtype=np.float64)
        return out


def compile_expression(text: str, inputs: set[str]) -> Expression:
    """Parse ``text`` over the names ``inputs``.

    Raises:
        ValueError: a syntax error, an unknown name or a construct the language does not
            have, naming it and its column.
    """
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as err:
        raise ValueError(f"not an expression: {err.msg} at column {err.offset}") from None
    used: set[str] = set()
    fn = _compile(tree.body, inputs, used)
    return Expression(text, frozenset(used), fn)


def expression_names(text: str) -> set[str]:
    """The input names ``text`` reads (not its constants or functions), so a caller can
    check them against the tags it knows before compiling.

    Raises:
        ValueError: ``text`` is not an expression.
    """
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as err:
        raise ValueError(f"not an expression: {err.msg} at column {err.offset}") from None
    functions = {id(n.func) for n in ast.walk(tree) if isinstance(n, ast.Call)}
    return {
        n.id
        for n in ast.walk(tree)
        if isinstance(n, ast.Name) and n.id not in _CONSTANTS and id(n) not in functions
    }


WINDOW_AGGREGATES = ("avg", "min", "max", "sum", "count", "first", "last", "delta", "twa")
"""The aggregates a window expression may call (the historian's bucketed aggregates)."""


@dataclass(frozen=True, slots=True)
class WindowExpression:
    """A compiled window expression.

    Attributes:
        expression: the plain expression over the terms' aliases.
        terms: per ``aggregate(tag)`` call, ``(alias, aggregate, tag)``; a call written
            twice is one term.
    """

    expression: Expression
    terms: tuple[tuple[str, str, str], ...]


def compile_window_expression(text: str, tags: set[str]) -> WindowExpression:
    """Parse ``text``, whose names are aggregates of the tags ``tags``.

    Raises:
        ValueError: a syntax error, a tag outside an aggregate, an unknown tag or
            aggregate, or a construct the language does not have.
    """
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as err:
        raise ValueError(f"not an expression: {err.msg} at column {err.offset}") from None
    terms: dict[tuple[str, str], str] = {}

    class _Terms(ast.NodeTransformer):
        def visit_Call(self, node: ast.Call) -> ast.AST:
            name = node.func.id if isinstance(node.func, ast.Name) else ""
            if name not in WINDOW_AGGREGATES:
                return self.generic_visit(node)
            where = f"at column {node.col_offset + 1}"
            if len(node.args) != 1 or node.keywords or not isinstance(node.args[0], ast.Name):
                raise ValueError(f"{name}() takes one tag name {where}, e.g. {name}(power_kw)")
            tag = node.args[0].id
            if tag not in tags:
                known = ", ".join(sorted(tags)) or "none"
                raise ValueError(f"unknown tag {tag!r} in {name}() {where} (tags: {known})")
            alias = terms.setdefault((name, tag), f"_{len(terms)}_{name}_{tag}")
            return ast.copy_location(ast.Name(id=alias, ctx=ast.Load()), node)

    body = _Terms().visit(tree.body)
    aliases = set(terms.values())
    used: set[str] = set()
    fn = _compile(body, aliases | tags, used)  # names a construct the language lacks
    for node in ast.walk(body):
        if isinstance(node, ast.Name) and node.id in used - aliases:
            raise ValueError(
                f"{node.id!r} at column {node.col_offset + 1} needs an aggregate: "
                f"{', '.join(WINDOW_AGGREGATES)}, e.g. avg({node.id})"
            )
    if not used:
        raise ValueError("a metric reads at least one aggregate, e.g. avg(power_kw)")
    expression = Expression(text, frozenset(used), fn)
    return WindowExpression(expression, tuple((a, g, t) for (g, t), a in terms.items()))


def _compile(node: ast.expr, inputs: set[str], used: set[str]) -> _Fn:
    where = f"at column {node.col_offset + 1}"
    if isinstance(node, ast.Constant) and isinstance(node.value, int | float):
        value = float(node.value)
        return lambda _v: np.asarray(value)
    if isinstance(node, ast.Name):
        name = node.id
        if name in _CONSTANTS:
            constant = _CONSTANTS[name]
            return lambda _v: np.asarray(constant)
        if name not in inputs:
            known = ", ".join(sorted(inputs)) or "none"
            raise ValueError(f"unknown name {name!r} {where} (inputs: {known})")
        used.add(name)
        return lambda v: v[name]
    if isinstance(node, ast.BoolOp):
        parts = [_compile(x, inputs, used) for x in node.values]
        combine = np.logical_and if isinstance(node.op, ast.And) else np.logical_or

        def boolean(v: Mapping[str, Array]) -> Array:
            out = _truth(parts[0](v))
            for part in parts[1:]:
                out = combine(out, _truth(part(v)))
            return out.astype(np.float64)

        return boolean
    if isinstance(node, ast.UnaryOp):
        operand = _compile(node.operand, inputs, used)
        if isinstance(node.op, ast.Not):
            return lambda v: (~_truth(operand(v))).astype(np.float64)
        if isinstance(node.op, ast.USub):
            return lambda v: -operand(v)
        raise ValueError(f"operator {type(node.op).__name__} is not allowed {where}")
    if isinstance(node, ast.BinOp) and type(node.op) in _ARITH:
        left, right = _compile(node.left, inputs, used), _compile(node.right, inputs, used)
        op = _ARITH[type(node.op)]
        return lambda v: op(left(v), right(v))
    if isinstance(node, ast.Compare):
        if not all(type(o) in _COMPARE for o in node.ops):
            raise ValueError(f"only < <= > >= == != compare {where}")
        terms = [_compile(x, inputs, used) for x in (node.left, *node.comparators)]
        ops = [_COMPARE[type(o)] for o in node.ops]

        def compare(v: Mapping[str, Array]) -> Array:
            values = [t(v) for t in terms]
            out = ops[0](values[0], values[1])
            for i in range(1, len(ops)):
                out = np.logical_and(out, ops[i](values[i], values[i + 1]))
            return np.asarray(out, np.float64)

        return compare
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
        spec = _FUNCTIONS.get(node.func.id)
        if spec is None or node.keywords:
            raise ValueError(f"function {node.func.id!r} is not allowed {where}")
        low, high, impl = spec
        if not low <= len(node.args) <= high:
            raise ValueError(f"{node.func.id} takes {low} to {high} arguments {where}")
        args = [_compile(a, inputs, used) for a in node.args]
        return lambda v: impl(*(a(v) for a in args))
    raise ValueError(f"{type(node).__name__} is not allowed in an expression {where}")


def _truth(values: Array) -> npt.NDArray[np.bool_]:
    truth: npt.NDArray[np.bool_] = np.nan_to_num(np.asarray(values, np.float64), nan=0.0) != 0.0
    return truth
