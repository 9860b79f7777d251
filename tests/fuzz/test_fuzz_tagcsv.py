"""Fuzz tag lists from CSV (``tags_file``): only ConfigError, naming the file and line.

A tag CSV comes from a PLC tool or a spreadsheet: any delimiter the sniffer may guess,
quotes, a byte-order mark, short and long rows, odd cells. It is read and then validated
by the connector's own tag model, through the same loader as an edge file.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from hypothesis import example, given
from hypothesis import strategies as st

from shopfloor.config import EdgeConfig
from shopfloor.config.load import load_config_text
from shopfloor.errors import ConfigError

from .fuzzing import FUZZ, only

EDGE = (
    '[edge]\nid = "e"\n[[connectors]]\nkind = "modbus"\nname = "plc"\n'
    'host = "127.0.0.1"\ntags_file = "tags.csv"\n'
)
COLUMNS = ["name", "address", "data_type", "scale", "offset", "unit", "states", "bit", "length"]
CELLS = [
    "temp", "hr:100", "ir:7", "co:1", "hr:x", "int16", "float32", "string", "bool", "0.1",
    "1e400", "nan", "-", "0=OFF;1=ON", "=;", "1=", "x=y", "degC", "", " ", '"', "99999999999",
]  # fmt: skip


@st.composite
def csv_texts(draw: st.DrawFn) -> str:
    """A header of known (and unknown) columns, rows of plausible and odd cells."""
    sep = draw(st.sampled_from([",", ";", "\t"]))
    header = draw(st.lists(st.sampled_from(COLUMNS) | st.text(max_size=6), min_size=1, max_size=6))
    cell = st.sampled_from(CELLS) | st.text(max_size=8)
    rows = draw(st.lists(st.lists(cell, max_size=len(header) + 2), max_size=5))
    bom = draw(st.sampled_from(["", "\ufeff"]))
    return bom + "\n".join(sep.join(r) for r in [header, *rows]) + "\n"


@given(text=csv_texts() | st.text(max_size=200))
@example(text="name,states\nmode,0=OFF;x\n")
@example(text="name;address\nt;hr:1;extra\n")
@example(text='name,address\n"t,hr:1\n')
@FUZZ
def test_tag_csv_raises_only_config_error(text: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "tags.csv").write_text(text, encoding="utf-8")
        err = only(ConfigError, lambda: load_config_text(EDGE, model=EdgeConfig, base=Path(tmp)))
    if isinstance(err, ConfigError):
        assert err.problems
        assert all(p.strip() for p in err.problems)


@given(data=st.binary(max_size=200))
@FUZZ
def test_tag_csv_bytes_that_are_not_utf8_raise_only_config_error(data: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "tags.csv").write_bytes(data)
        only(ConfigError, lambda: load_config_text(EDGE, model=EdgeConfig, base=Path(tmp)))
