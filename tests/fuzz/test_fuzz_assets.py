"""Fuzz the plant and template files (TOML and YAML): only ConfigError, naming the place.

Start from the demo plant, which loads, and break it the way hand edits do: a value of
the wrong type, a key deleted or added, a list where a table belongs, odd text; then
write the files and load them the way ``shopfloor assets check`` and the server do. Raw
text goes through the parsers too, including YAML's anchors and aliases.
"""

from __future__ import annotations

import copy
import tempfile
import tomllib
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from shopfloor.config.assets import PlantFile, TemplateFile
from shopfloor.errors import ConfigError
from shopfloor.server.assets import build_asset_model, load_asset_model
from shopfloor.server.assets.files import load_file, parse_text, read_document, render

from .fuzzing import EXAMPLES, FUZZ, json_values, mutate, only, scalars

_DEMO = resources.files("shopfloor") / "demo_plant"
PLANT: dict[str, Any] = tomllib.loads((_DEMO / "plant.toml").read_text())
TEMPLATES: dict[str, dict[str, Any]] = {
    Path(f.name).stem: tomllib.loads(f.read_text())
    for f in (_DEMO / "templates").iterdir()
    if f.name.endswith(".toml")
}

_no_null = st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=20)


def _load(fmt: str, name: str, doc: dict[str, Any]) -> None:
    """Write one file (the plant, or template ``name``) and load it with the model's
    loader; the other files are the demo's, already loaded."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"{name}.{fmt}"
        path.write_text(render(doc, fmt))  # type: ignore[arg-type]

        def load() -> None:
            if name == "plant":
                plant = load_file(path, PlantFile)
                document = read_document(path)
                build_asset_model(
                    plant, TEMPLATE_MODELS, text=document.text, locate=document.locate
                )
            else:
                template = load_file(path, TemplateFile)
                build_asset_model(PLANT_MODEL, {**TEMPLATE_MODELS, template.type: template})

        err = only(ConfigError, load)
        if isinstance(err, ConfigError):
            assert err.problems
            assert all(p.strip() for p in err.problems)


PLANT_MODEL = PlantFile.model_validate(PLANT)
TEMPLATE_MODELS = {
    t.type: t for t in (TemplateFile.model_validate(doc) for doc in TEMPLATES.values())
}


def test_the_demo_plant_loads_in_both_formats() -> None:
    """The harness's starting point is valid: a failure below is the mutation's."""
    for fmt in ("toml", "yaml"):
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            (folder / "templates").mkdir()
            (folder / f"plant.{fmt}").write_text(render(PLANT, fmt))  # type: ignore[arg-type]
            for name, template in TEMPLATES.items():
                text = render(template, fmt)  # type: ignore[arg-type]
                (folder / "templates" / f"{name}.{fmt}").write_text(text)
            model = load_asset_model(folder / f"plant.{fmt}", folder / "templates")
            assert len(model.equipment) == len(PLANT["equipment"])


@pytest.mark.parametrize("fmt", ["toml", "yaml"])
@given(data=st.data())
@settings(FUZZ, max_examples=max(1, EXAMPLES // 3))  # each example writes and loads a file
def test_broken_plant_and_template_files_raise_only_config_error(
    fmt: str, data: st.DataObject
) -> None:
    name = data.draw(st.sampled_from(["plant", *sorted(TEMPLATES)]))
    doc = copy.deepcopy(PLANT if name == "plant" else TEMPLATES[name])
    values = json_values(_no_null if fmt == "toml" else scalars)  # TOML has no null
    for _ in range(data.draw(st.integers(1, 3))):
        mutate(data, doc, values)
    _load(fmt, name, doc)


_yaml_text = st.text(alphabet=st.sampled_from(list("ab01:-[]{},&*!|>'\"#?\n .%@`~=")), max_size=120)
_RECURSIVE = "a: &x [*x]\n"
_NESTED_MAP = "a: &x {b: *x}\n"
_LAUGHS = "a: &a [1,1,1,1,1,1,1,1,1]\n" + "".join(
    f"{n}: &{n} [{', '.join([f'*{p}'] * 9)}]\n"
    for p, n in zip("abcdefgh", "bcdefghi", strict=False)
)


@given(text=_yaml_text | st.text(max_size=200))
@example(text=_RECURSIVE)
@example(text=_NESTED_MAP)
@example(text=_LAUGHS)
@FUZZ
def test_arbitrary_yaml_raises_only_config_error(text: str) -> None:
    only(ConfigError, lambda: parse_text(text, fmt="yaml", source="plant.yaml"))


@given(text=st.text(alphabet=st.sampled_from(list("ab01=[]{},.\"'#\n \\tx-:")), max_size=120))
@FUZZ
def test_arbitrary_toml_raises_only_config_error(text: str) -> None:
    only(ConfigError, lambda: parse_text(text, fmt="toml", source="plant.toml"))
