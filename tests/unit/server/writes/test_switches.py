"""The per-connector writes switches: off by default, kept across restarts, and off when
their file is damaged (fail closed)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from shopfloor.server.writes import WriteSwitches


async def test_switches_are_off_by_default_and_survive_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "writes.json"
    switches = WriteSwitches(path)
    switches.load()
    assert switches.enabled("press") is False
    assert await switches.set("press", True) is False
    assert await switches.set("oven", False) is False
    again = WriteSwitches(path)
    again.load()
    assert (again.enabled("press"), again.enabled("oven"), again.enabled("other")) == (
        True,
        False,
        False,
    )
    assert await again.set("press", False) is True


@pytest.mark.parametrize(
    "text", ["{not json", '{"enabled": {"press": "yes"}}', '{"on": ["press"]}', "[]"]
)
def test_a_damaged_file_leaves_every_connector_off_and_says_so(
    tmp_path: Path, text: str, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "writes.json"
    path.write_text(text)
    switches = WriteSwitches(path)
    with caplog.at_level(logging.ERROR):
        switches.load()
    assert switches.enabled("press") is False
    assert "writes to equipment stay off" in caplog.text
