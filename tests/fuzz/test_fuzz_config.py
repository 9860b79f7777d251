"""Fuzz the configuration files (``shopfloor.toml``, edge files): only ConfigError, each
problem with its key and line, whatever a hand edit does to the examples."""

from __future__ import annotations

import copy
import tempfile
import tomllib
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shopfloor.config import EdgeConfig, ShopfloorConfig
from shopfloor.config.load import load_model
from shopfloor.errors import ConfigError
from shopfloor.server.assets.files import render

from .fuzzing import EXAMPLES, FUZZ, json_values, mutate, only

EXAMPLES_DIR = Path(__file__).parents[2] / "examples"
FILES: dict[str, tuple[dict[str, Any], type[Any]]] = {
    name: (tomllib.loads((EXAMPLES_DIR / name).read_text()), model)
    for name, model in [("shopfloor.toml", ShopfloorConfig), ("edge.toml", EdgeConfig)]
}
_values = json_values(
    st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=20)
)


@pytest.mark.parametrize("name", sorted(FILES))
@given(data=st.data())
@settings(FUZZ, max_examples=max(1, EXAMPLES // 3))  # each example writes and loads a file
def test_broken_configuration_files_raise_only_config_error(name: str, data: st.DataObject) -> None:
    base, model = FILES[name]
    doc = copy.deepcopy(base)
    for _ in range(data.draw(st.integers(1, 3))):
        mutate(data, doc, _values)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / name
        path.write_text(render(doc, "toml"))
        err = only(ConfigError, lambda: load_model(path, model))
    if isinstance(err, ConfigError):
        assert err.problems
        assert all(p.strip() for p in err.problems)


@given(text=st.text(alphabet=st.sampled_from(list("ab01=[]{},.\"'#\n \\tx-:")), max_size=120))
@FUZZ
def test_arbitrary_toml_raises_only_config_error(text: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "edge.toml"
        path.write_text(text)
        only(ConfigError, lambda: load_model(path, EdgeConfig))
