"""Request planning: as few Modbus requests as the protocol's limits allow."""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shopfloor.config.connectors.modbus import (
    ModbusAddress,
    ModbusConnectorConfig,
    Table,
    parse_address,
)
from shopfloor.edge.connectors.modbus import ModbusConnector
from shopfloor.edge.connectors.modbus_plan import Span, coalesce


def test_contiguous_float32_tags_fill_requests_of_at_most_125_registers() -> None:
    spans = [Span("hr", 2 * i, 2) for i in range(200)]  # 400 registers
    blocks = coalesce(spans, max_gap=0, max_span=125)
    # a float32 cannot straddle two requests: 62 fit in one (124 registers)
    assert len(blocks) == math.ceil(200 / (125 // 2))
    assert all(b.count <= 125 for b in blocks)
    assert sorted(m for b in blocks for m in b.members) == list(range(200))


def test_bits_fill_requests_of_at_most_2000() -> None:
    blocks = coalesce([Span("co", i, 1) for i in range(2500)], max_gap=0, max_span=2000)
    assert [(b.start, b.count) for b in blocks] == [(0, 2000), (2000, 500)]


def test_gap_limit() -> None:
    spans = [Span("hr", 0, 1), Span("hr", 10, 1)]  # nine unused registers between
    assert len(coalesce(spans, max_gap=8, max_span=125)) == 2
    (block,) = coalesce(spans, max_gap=9, max_span=125)
    assert (block.start, block.count) == (0, 11)
    assert block.has_gaps(spans)


def test_keys_never_share_a_request() -> None:
    spans = [Span((1, "hr"), 0, 1), Span((2, "hr"), 1, 1), Span((1, "ir"), 2, 1)]
    assert len(coalesce(spans, max_gap=100, max_span=125)) == 3


def test_overlapping_and_unsorted_spans() -> None:
    spans = [Span("hr", 10, 4), Span("hr", 0, 2), Span("hr", 11, 1), Span("hr", 2, 2)]
    blocks = coalesce(spans, max_gap=0, max_span=125)
    assert [(b.start, b.count) for b in blocks] == [(0, 4), (10, 4)]
    assert not any(b.has_gaps(spans) for b in blocks)


def test_span_larger_than_a_request_is_refused() -> None:
    with pytest.raises(ValueError, match="larger"):
        coalesce([Span("hr", 0, 126)], max_gap=0, max_span=125)


def _fewest(spans: Sequence[Span], max_gap: int, limit: int) -> int:
    """Independent count: dynamic programme over non-overlapping spans sorted by start."""
    s = sorted(spans, key=lambda x: x.start)
    best = [0] + [math.inf] * len(s)
    for j in range(1, len(s) + 1):
        for i in range(j):  # spans i..j-1 in one request
            run = s[i:j]
            fits = run[-1].start + run[-1].size - run[0].start <= limit
            gaps_ok = all(
                b.start - (a.start + a.size) <= max_gap for a, b in itertools.pairwise(run)
            )
            if fits and gaps_ok:
                best[j] = min(best[j], best[i] + 1)
    return int(best[-1])


@settings(max_examples=150, deadline=None)
@given(
    sizes=st.lists(st.tuples(st.integers(0, 12), st.integers(1, 4)), min_size=1, max_size=14),
    max_gap=st.integers(0, 6),
    limit=st.integers(4, 20),
)
def test_plan_is_minimal_and_covers_every_span(
    sizes: list[tuple[int, int]], max_gap: int, limit: int
) -> None:
    spans, at = [], 0
    for gap, size in sizes:  # non-overlapping, in address order, then shuffled by reversal
        at += gap
        spans.append(Span("hr", at, size))
        at += size
    spans.reverse()
    blocks = coalesce(spans, max_gap=max_gap, max_span=limit)
    seen = sorted(m for b in blocks for m in b.members)
    assert seen == list(range(len(spans)))
    for b in blocks:
        assert b.count <= limit
        for m in b.members:
            assert b.start <= spans[m].start
            assert spans[m].start + spans[m].size <= b.end
    assert len(blocks) == _fewest(spans, max_gap, limit)


def test_addresses() -> None:
    assert parse_address("hr:100") == ModbusAddress(Table.HOLDING, 100)
    assert parse_address(" IR : 0 ") == ModbusAddress(Table.INPUT, 0)
    assert parse_address("40001") == ModbusAddress(Table.HOLDING, 0)
    assert parse_address("30010") == ModbusAddress(Table.INPUT, 9)
    assert parse_address("10001") == ModbusAddress(Table.DISCRETE, 0)
    assert parse_address("00005") == ModbusAddress(Table.COIL, 4)
    assert parse_address("465536") == ModbusAddress(Table.HOLDING, 65535)
    for bad in ("hr:65536", "40000", "50001", "hr100", "", "4001"):
        with pytest.raises(ValueError, match="Modbus address"):
            parse_address(bad)


def _config(**kwargs: object) -> ModbusConnectorConfig:
    return ModbusConnectorConfig.model_validate({"name": "m", "host": "127.0.0.1", **kwargs})


def test_connector_plans_each_poll_group() -> None:
    tags = [{"name": f"t{i}", "address": f"hr:{2 * i}", "data_type": "float32"} for i in range(70)]
    tags += [
        {"name": "fast", "address": "hr:500", "data_type": "uint16", "period": "100ms"},
        {"name": "run", "address": "co:3"},
        {"name": "alarm", "address": "co:9"},
        {"name": "other", "address": "hr:0", "unit_id": 7, "data_type": "int16"},
    ]
    connector = ModbusConnector(_config(tags=tags, max_gap=8))
    groups = {g.name: g for g in connector.groups()}
    assert set(groups) == {"1s", "100ms"}
    assert groups["100ms"].paths == ("fast",)
    assert connector.plan(groups["100ms"]) == [(1, "hr", 500, 1)]
    assert sorted(connector.plan(groups["1s"])) == [
        (1, "co", 3, 7),
        (1, "hr", 0, 124),
        (1, "hr", 124, 16),
        (7, "hr", 0, 1),
    ]


def test_config_validation() -> None:
    with pytest.raises(ValueError, match="host"):
        ModbusConnectorConfig.model_validate({"name": "m"})
    with pytest.raises(ValueError, match="serial_port"):
        ModbusConnectorConfig.model_validate({"name": "m", "transport": "rtu"})
    with pytest.raises(ValueError, match="single bits"):
        _config(tags=[{"name": "x", "address": "co:1", "data_type": "uint16"}])
    with pytest.raises(ValueError, match="read-only"):
        _config(tags=[{"name": "x", "address": "ir:1", "writable": True}])
    with pytest.raises(ValueError, match="read-modify-write"):
        _config(tags=[{"name": "x", "address": "hr:1", "bit": 3, "writable": True}])
    with pytest.raises(ValueError, match="length"):
        _config(tags=[{"name": "x", "address": "hr:1", "data_type": "string"}])
    with pytest.raises(ValueError, match="do not fit"):
        _config(tags=[{"name": "x", "address": "hr:1", "data_type": "string", "length": 300}])
    with pytest.raises(ValueError, match="Modbus address"):
        _config(tags=[{"name": "x", "address": "DB1.DBW0"}])
    coil = _config(tags=[{"name": "x", "address": "00001"}]).tags[0]
    assert coil.data_type == "bool"
