"""The edge credentials file: parsing (bad lines named and skipped), reloading on change,
and issuing tokens with ``shopfloor edge credential``."""

from __future__ import annotations

import hashlib
import logging
import stat
from pathlib import Path

import pytest
from typer.testing import CliRunner

from shopfloor.cli import app
from shopfloor.errors import ConfigError
from shopfloor.server.ingest.credentials import (
    CredentialExists,
    EdgeCredentials,
    issue_credential,
    parse_credentials,
)


def sha(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def test_lines_map_tokens_to_edges_and_comments_are_ignored() -> None:
    text = (
        "# issued 2026-01-01\n"
        "\n"
        f"press-1 sha256:{sha('token-one')}\n"
        f"  press-2   sha256:{sha('token-two').upper()}   # trailing comment\n"
    )
    table = parse_credentials(text)
    assert table.problems == ()
    assert table.edge_of("token-one") == "press-1"
    assert table.edge_of("token-two") == "press-2"
    assert table.edge_of("token-three") is None
    assert table.edge_of("") is None
    assert table.lines == {"press-1": 3, "press-2": 4}


def test_malformed_lines_are_named_by_line_and_the_others_still_work() -> None:
    good = f"press-1 sha256:{sha('good')}"
    text = "\n".join(
        [
            good,  # 1
            "press-2",  # 2: one field
            f"press-3 sha256:{sha('x')} extra",  # 3: three fields
            f"bad/id sha256:{sha('y')}",  # 4: not an edge id
            "press-4 a-token-pasted-by-mistake",  # 5: not a hash
            f"press-5 sha256:{sha('z')[:60]}",  # 6: short hash
            f"press-1 sha256:{sha('other')}",  # 7: edge twice
            f"press-6 sha256:{sha('good')}",  # 8: the same token as press-1
            f"press-7 md5:{sha('w')}",  # 9: another algorithm
        ]
    )
    table = parse_credentials(text)
    assert [p.line for p in table.problems] == [2, 3, 4, 5, 6, 7, 8, 9]
    assert table.edge_of("good") == "press-1"
    assert set(table.lines) == {"press-1"}
    messages = {p.line: str(p) for p in table.problems}
    assert "got 1 field" in messages[2]
    assert "got 3 fields" in messages[3]
    assert "'bad/id' is not an edge id" in messages[4]
    assert "a-token-pasted" not in messages[5], "a pasted token is never echoed"
    assert "line 1" in messages[7]
    assert "press-1" in messages[8]


def test_issue_credential_appends_replaces_and_refuses(tmp_path: Path) -> None:
    path = tmp_path / "edge-credentials.txt"
    path.write_text("# platform credentials\n")
    first = issue_credential(path, "press-1")
    second = issue_credential(path, "press-2")
    lines = path.read_text().splitlines()
    assert lines == [
        "# platform credentials",
        f"press-1 sha256:{sha(first)}",
        f"press-2 sha256:{sha(second)}",
    ]
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(first) >= 43
    assert first != second

    with pytest.raises(CredentialExists) as info:
        issue_credential(path, "press-1")
    assert info.value.line == 2
    assert path.read_text().splitlines() == lines, "a refusal changes nothing"

    renewed = issue_credential(path, "press-1", replace=True)
    table = parse_credentials(path.read_text())
    assert table.edge_of(renewed) == "press-1"
    assert table.edge_of(first) is None, "the replaced token stops working"
    assert table.lines == {"press-1": 2, "press-2": 3}, "replaced in place"
    with pytest.raises(ValueError, match="not an edge id"):
        issue_credential(path, "../etc")
    assert [p.name for p in tmp_path.iterdir()] == [path.name], "no temporary file left"


def test_the_cli_prints_the_token_once_and_exits_by_outcome(tmp_path: Path) -> None:
    path = tmp_path / "creds.txt"
    runner = CliRunner()
    issued = runner.invoke(app, ["edge", "credential", "press-1", "--file", str(path)])
    assert issued.exit_code == 0, issued.output
    token = issued.stdout.strip()
    assert "\n" not in token
    assert parse_credentials(path.read_text()).edge_of(token) == "press-1"
    assert "token_file" in issued.stderr, "a hint for the edge's configuration"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600

    again = runner.invoke(app, ["edge", "credential", "press-1", "--file", str(path)])
    assert again.exit_code == 1
    assert "--replace" in again.stderr
    assert again.stdout == ""
    bad = runner.invoke(app, ["edge", "credential", "press 1", "--file", str(path)])
    assert bad.exit_code == 2
    replaced = runner.invoke(
        app, ["edge", "credential", "press-1", "--file", str(path), "--replace"]
    )
    assert replaced.exit_code == 0
    table = parse_credentials(path.read_text())
    assert table.edge_of(replaced.stdout.strip()) == "press-1"
    assert table.edge_of(token) is None


class Ticks:
    """A monotonic clock moved by hand."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


async def test_the_file_is_reread_when_it_changes_at_most_once_a_second(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "creds.txt"
    a = issue_credential(path, "edge-a")
    ticks = Ticks()
    credentials = EdgeCredentials(path, monotonic=ticks)
    credentials.load()
    assert await credentials.identify(a) == "edge-a"

    b = issue_credential(path, "edge-b")
    ticks.now += 0.5
    assert await credentials.identify(b) is None, "not looked at again within the second"
    ticks.now += 0.5
    assert await credentials.identify(b) == "edge-b"

    caplog.set_level(logging.ERROR, logger="shopfloor.server.ingest.credentials")
    with path.open("a") as file:
        file.write("edge-c not-a-hash\n")
    ticks.now += 1
    assert await credentials.identify(a) == "edge-a", "a bad line does not lock out the others"
    assert "line 3" in caplog.text
    assert credentials.edges == 2

    path.unlink()
    ticks.now += 1
    assert await credentials.identify(a) == "edge-a", "an unreadable file keeps the last table"
    assert caplog.text.count("cannot read edge credentials") == 1
    ticks.now += 1
    assert await credentials.identify(a) == "edge-a"
    assert caplog.text.count("cannot read edge credentials") == 1, "logged once"

    path.write_text(f"edge-b sha256:{sha(b)}\n")  # edge-a revoked
    ticks.now += 1
    assert await credentials.identify(a) is None
    assert await credentials.identify(b) == "edge-b"


def test_a_missing_file_stops_the_start(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"ingest\.edge_credentials: cannot read"):
        EdgeCredentials(tmp_path / "missing.txt").load()


def test_an_unreadable_file_stops_the_start(tmp_path: Path) -> None:
    path = tmp_path / "creds.txt"
    path.mkdir()  # unreadable as a file, for root too (a chmod would not stop root)
    with pytest.raises(ConfigError, match=r"ingest\.edge_credentials: cannot read"):
        EdgeCredentials(path).load()
