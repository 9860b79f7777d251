"""Edits of a reviewed plant file touch only what changed: comments, blank lines, dotted
keys and inline tables stay as written."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
import tomlkit

from shopfloor.server.assets.editor import atomic_write, merge_patch
from shopfloor.server.assets.toml_edit import add_row, remove_row, sync_row

PLANT = """\
# Site 2, reviewed 2026-11-02.
enterprise = "acme"
site = "plant-2"

# Cooling water.
[[equipment]]
id = "p-01"   # the old one
template = "pump"
area = "water"
line = "cooling"
cell = "pumps"
connector = "plc-1"
bindings.flow = { address = "hr:100", data_type = "int16", scale = 0.1 }
bindings.state = { address = "hr:101" }

# The spare, installed 2025.
[[equipment]]
id = "p-02"
template = "pump"
area = "water"
line = "cooling"
cell = "pumps"
attributes = { rated_kw = 7.5 }

# Last one.
[[equipment]]
id = "p-03"
template = "pump"
area = "water"
line = "cooling"
cell = "pumps"
"""


def rows(text: str) -> list[dict[str, object]]:
    return list(tomllib.loads(text)["equipment"])


def test_changing_keys_keeps_comments_dotted_keys_and_inline_style() -> None:
    doc = tomlkit.parse(PLANT)
    first = rows(PLANT)[0]
    wanted = merge_patch(first, {"bindings": {"flow": {"scale": 0.01}, "state": None}})
    sync_row(doc["equipment"][0], {**wanted, "location": "hall B"})
    second = rows(PLANT)[1]
    sync_row(doc["equipment"][1], merge_patch(second, {"attributes": {"rated_kw": 9.0}}))
    text = doc.as_string()
    assert 'id = "p-01"   # the old one' in text
    assert 'bindings.flow = { address = "hr:100", data_type = "int16", scale = 0.01 }' in text
    assert "bindings.state" not in text
    assert 'location = "hall B"\n\n# The spare, installed 2025.\n[[equipment]]' in text
    assert "attributes = { rated_kw = 9.0 }" in text
    assert rows(text)[0]["location"] == "hall B"


def test_removing_a_row_keeps_the_comment_that_introduces_the_next() -> None:
    for index, gone in ((1, "p-02"), (0, "p-01")):
        doc = tomlkit.parse(PLANT)
        remove_row(doc, "equipment", index)
        text = doc.as_string()
        assert f'id = "{gone}"' not in text
        assert "# Last one." in text
        assert "# Site 2, reviewed 2026-11-02." in text
        if index == 1:
            assert "# The spare, installed 2025." in text  # it stays above the row it opened
        assert len(rows(text)) == 2


def test_a_new_row_goes_at_the_end_after_a_blank_line() -> None:
    doc = tomlkit.parse(PLANT)
    add_row(
        doc,
        "equipment",
        {
            "id": "p-04",
            "template": "pump",
            "area": "water",
            "line": "cooling",
            "cell": "pumps",
            "attributes": {"rated_kw": 3.0},
        },
    )
    text = doc.as_string()
    assert text.startswith(PLANT)
    assert text[len(PLANT) :].startswith('\n[[equipment]]\nid = "p-04"')
    assert rows(text)[-1]["attributes"] == {"rated_kw": 3.0}


def test_the_plant_file_is_replaced_whole_with_its_mode(tmp_path: Path) -> None:
    plant = tmp_path / "plant.toml"
    plant.write_text(PLANT)
    plant.chmod(0o640)
    atomic_write(plant, PLANT + "# more\n")
    assert plant.read_text().endswith("# more\n")
    assert plant.stat().st_mode & 0o777 == 0o640
    assert [p.name for p in tmp_path.iterdir()] == ["plant.toml"]  # no temporary left
    missing = tmp_path / "gone" / "plant.toml"
    with pytest.raises(FileNotFoundError):
        atomic_write(missing, PLANT)


SECTIONS = """\
enterprise = "acme"
site = "plant-2"

[[equipment]]
id = "p-01"
template = "pump"

[equipment.attributes]
rated_kw = 5.0

# The spare.
[[equipment]]
id = "p-02"
template = "pump"

[equipment.bindings.flow]
address = "hr:1"
"""


def test_rows_written_with_sub_table_sections_get_new_keys_in_the_right_section() -> None:
    doc = tomlkit.parse(SECTIONS)
    first, second = rows(SECTIONS)
    sync_row(doc["equipment"][0], {**first, "location": "x", "attributes": {"rated_kw": 6.0}})
    bindings = {"flow": {"address": "hr:1"}, "state": {"address": "hr:2"}}
    sync_row(doc["equipment"][1], {**second, "serial": "y", "bindings": bindings})
    text = doc.as_string()
    assert rows(text) == [
        {**first, "location": "x", "attributes": {"rated_kw": 6.0}},
        {**second, "serial": "y", "bindings": bindings},
    ]
    assert "rated_kw = 6.0\n\n# The spare.\n[[equipment]]" in text
    doc = tomlkit.parse(SECTIONS)
    remove_row(doc, "equipment", 0)  # the comment sat in the removed row's last section
    assert doc.as_string().count("# The spare.") == 1
