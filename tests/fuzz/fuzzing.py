"""The one settings profile of the fuzz harnesses, and the inputs they share.

Each harness feeds a parser of outside input (a broker message, an uploaded body, a file
an operator wrote) with generated input and allows only the parser's documented error.
``FUZZ`` keeps each harness to a few seconds in ``make test``: a fixed number of examples
and no per-example deadline — on a shared 2-core machine a deadline fails on load, not on
the parser. A parser that spins is caught by pytest-timeout, and the inputs known to blow
up (YAML alias bombs, deep nesting) are explicit examples that must end in the typed
error. ``SHOPFLOOR_FUZZ_EXAMPLES=20000`` runs longer, by hand (with ``--timeout=0``).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

EXAMPLES = int(os.environ.get("SHOPFLOOR_FUZZ_EXAMPLES", "100"))

FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(-(2**70), 2**70)
    | st.floats()
    | st.text(max_size=20)
)
"""JSON-ish leaves, with the awkward ones: huge integers, NaN, infinities, odd text."""


def json_values(leaves: st.SearchStrategy[Any] = scalars) -> st.SearchStrategy[Any]:
    """Nested lists and objects of ``leaves``."""
    return st.recursive(
        leaves,
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
        max_leaves=10,
    )


def only(error: type[Exception], call: Callable[[], object]) -> Exception | None:
    """Run ``call``; return the ``error`` it raised (None if it returned). Any other
    exception propagates and fails the harness."""
    try:
        call()
    except error as err:
        return err
    return None


def mutate(data: st.DataObject, doc: dict[str, Any], values: st.SearchStrategy[Any]) -> None:
    """Replace, delete or add one entry somewhere in ``doc`` (in place)."""
    node: Any = doc
    while True:
        keys = list(node) if isinstance(node, dict) else list(range(len(node)))
        if not keys:
            break
        key = data.draw(st.sampled_from(keys))
        child = node[key]
        if isinstance(child, dict | list) and child and data.draw(st.booleans()):
            node = child
            continue
        op = data.draw(st.sampled_from(["replace", "delete", "add"]))
        if op == "replace":
            node[key] = data.draw(values)
        elif op == "delete":
            del node[key]
        elif isinstance(node, dict):
            node[data.draw(st.text(min_size=1, max_size=10))] = data.draw(values)
        else:
            node.append(data.draw(values))
        return
