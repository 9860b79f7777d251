"""From OPC UA DataValues to PointBatch columns, and which connector shape the agent sees."""

from __future__ import annotations

import datetime as dt
import logging
import math
from typing import Any

import numpy as np
import pytest
from asyncua import ua

from shopfloor.config.connectors.opcua import OpcUaConnectorConfig
from shopfloor.edge.connectors.base import Pollable, Subscribable
from shopfloor.edge.connectors.opcua import OpcUaConnector, OpcUaPollConnector, ValueDecoder
from shopfloor.model import Quality

PATHS = ["l/temp", "l/count", "l/run", "l/recipe", "l/word", "l/curve"]
RECEIVED = 1_700_000_000_000_000_000
SOURCE = dt.datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=dt.UTC)
SOURCE_NS = 1_714_979_289_123_456_000  # date -d '2024-05-06T07:08:09Z' +%s → 1714979289
BAD_TYPE_MISMATCH = 0x80740000


def value(
    raw: Any,
    variant: ua.VariantType | None = None,
    *,
    status: int = 0,
    source: dt.datetime | None = SOURCE,
    server: dt.datetime | None = None,
) -> ua.DataValue:
    return ua.DataValue(
        ua.Variant(raw, variant) if variant else ua.Variant(raw),
        StatusCode=ua.StatusCode(status),
        SourceTimestamp=source,
        ServerTimestamp=server,
    )


def decoder() -> ValueDecoder:
    return ValueDecoder("plc", PATHS, bits=[None, None, None, None, 4, None])


def rows(d: ValueDecoder) -> list[tuple[str, int, float, int, str | None]]:
    batch = d.take()
    texts = batch.text.to_pylist() if batch.text is not None else [None] * len(batch)
    return list(
        zip(
            batch.paths().tolist(),
            batch.ts.tolist(),
            batch.value.tolist(),
            batch.quality.tolist(),
            texts,
            strict=True,
        )
    )


def test_numbers_booleans_and_strings_keep_type_timestamp_and_status() -> None:
    d = decoder()
    d.add(0, value(21.5, ua.VariantType.Double), RECEIVED)
    d.add(1, value(-7, ua.VariantType.Int32, status=Quality.UNCERTAIN), RECEIVED)
    d.add(2, value(True), RECEIVED)
    d.add(3, value("PA6"), RECEIVED)
    d.add(3, value(ua.LocalizedText("PA6 black")), RECEIVED)
    got = rows(d)
    assert got[0] == ("l/temp", SOURCE_NS, 21.5, 0, None)
    assert got[1] == ("l/count", SOURCE_NS, -7.0, Quality.UNCERTAIN, None)
    assert got[2] == ("l/run", SOURCE_NS, 1.0, 0, None)
    assert got[3][0::3] == ("l/recipe", 0)
    assert got[3][4] == "PA6"
    assert math.isnan(got[3][2])
    assert got[4][4] == "PA6 black"


def test_timestamps_fall_back_to_server_then_receive_time() -> None:
    d = decoder()
    server = SOURCE + dt.timedelta(seconds=1)
    d.add(0, value(1.0, source=None, server=server), RECEIVED)
    d.add(0, value(2.0, source=None), RECEIVED)
    assert [r[1] for r in rows(d)] == [SOURCE_NS + 1_000_000_000, RECEIVED]


def test_a_bit_of_an_integer() -> None:
    d = decoder()
    d.add(4, value(0b1_0000, ua.VariantType.UInt16), RECEIVED)
    d.add(4, value(0b0_1111, ua.VariantType.UInt16), RECEIVED)
    assert [r[2] for r in rows(d)] == [1.0, 0.0]


def test_arrays_and_unsupported_types_are_bad_and_logged_once_per_transition(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="shopfloor.edge.connectors.opcua")
    d = decoder()
    for _ in range(3):
        d.add(5, value([1.0, 2.0]), RECEIVED)
    d.add(5, value(b"\x00"), RECEIVED)
    d.add(5, value(3.0), RECEIVED)
    d.add(5, value(4.0), RECEIVED)
    got = rows(d)
    assert [r[3] for r in got] == [BAD_TYPE_MISMATCH] * 4 + [0, 0]
    assert all(math.isnan(r[2]) for r in got[:4])
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 3  # array, then byte string, then readable again
    assert "array" in messages[0]
    assert "ByteString" in messages[1]
    assert "again" in messages[2]


def test_a_bad_status_from_the_server_wins_over_the_missing_value(
    caplog: pytest.LogCaptureFixture,
) -> None:
    d = decoder()
    d.add(0, value(None, status=Quality.BAD_SENSOR_FAILURE), RECEIVED)
    d.add(0, value(None), RECEIVED)  # Good but empty: no number to show
    got = rows(d)
    assert got[0][3] == Quality.BAD_SENSOR_FAILURE
    assert got[1][3] & 0x80000000
    assert len([r for r in caplog.records if "null" in r.getMessage()]) == 1


def test_batch_names_only_the_tags_it_holds_and_resets() -> None:
    d = decoder()
    d.add(5, value(1.0), RECEIVED)
    d.add(1, value(2.0), RECEIVED)
    d.add(5, value(3.0), RECEIVED)
    d.add(99, value(4.0), RECEIVED)  # an unknown handle is dropped
    batch = d.take()
    assert batch.tags == ("l/count", "l/curve")
    assert batch.paths().tolist() == ["l/curve", "l/count", "l/curve"]
    assert batch.text is None
    assert len(d.take()) == 0
    np.testing.assert_array_equal(batch.value, [1.0, 2.0, 3.0])


def settings(**extra: Any) -> OpcUaConnectorConfig:
    return OpcUaConnectorConfig.model_validate(
        {
            "name": "plc",
            "endpoint": "opc.tcp://127.0.0.1:4840",
            "security_policy": "None",
            "allow_insecure": True,
            "asset": "acme/p1",
            "tags": [
                {"name": "a", "address": "ns=2;s=A"},
                {"name": "b", "address": "ns=2;s=B", "period": "250ms"},
                {"name": "c", "address": "ns=2;i=7", "scale": 0.1, "unit": "bar"},
            ],
            **extra,
        }
    )


def test_the_agent_sees_a_subscriber_or_a_poller_never_both() -> None:
    subscriber = OpcUaConnector.from_config(settings())
    poller = OpcUaConnector.from_config(settings(mode="poll"))
    assert isinstance(subscriber, OpcUaConnector)
    assert isinstance(subscriber, Subscribable)
    assert not isinstance(subscriber, Pollable)
    assert isinstance(poller, OpcUaPollConnector)
    assert isinstance(poller, Pollable)


def test_poll_groups_by_period_and_metadata() -> None:
    poller = OpcUaConnector.from_config(settings(mode="poll", period="2s"))
    assert isinstance(poller, OpcUaPollConnector)
    assert {(g.period_s, g.paths) for g in poller.groups()} == {
        (0.25, ("acme/p1/b",)),
        (2.0, ("acme/p1/a", "acme/p1/c")),
    }
    specs = {s.path: s for s in poller.specs()}
    assert specs["acme/p1/c"].scale == 0.1
    assert [t.unit for t in poller.tags()] == ["", "", "bar"]
