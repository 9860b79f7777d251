"""The Sparkplug B schema and codecs: wire format per the specification, round trips."""

from __future__ import annotations

import contextlib
import math
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shopfloor.sparkplug import (
    DataType,
    MessageType,
    SparkplugDecodeError,
    SparkplugTopic,
    add_metric,
    decode_payload,
    metric_value,
    new_payload,
    parse_state,
    parse_topic,
    property_values,
    state_payload,
    topic_for,
)


# A minimal protobuf wire-format writer, written from the encoding rules, so the expected
# bytes do not come from the code under test. Field numbers are those of the Sparkplug B
# specification's sparkplug_b.proto.
def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def key(field: int, wire_type: int) -> bytes:
    return varint(field << 3 | wire_type)


def vint(field: int, n: int) -> bytes:
    return key(field, 0) + varint(n)


def ld(field: int, data: bytes) -> bytes:
    return key(field, 2) + varint(len(data)) + data


def f32(field: int, x: float) -> bytes:
    return key(field, 5) + struct.pack("<f", x)


def f64(field: int, x: float) -> bytes:
    return key(field, 1) + struct.pack("<d", x)


def test_encoding_matches_the_field_numbers_of_the_specification() -> None:
    payload = new_payload(timestamp_ms=1_700_000_000_123, seq=7)
    add_metric(payload, name="Motor/Speed", alias=5, datatype=DataType.FLOAT, value=1.5)
    add_metric(payload, alias=6, datatype=DataType.DOUBLE, value=-2.25, timestamp_ms=42)
    add_metric(payload, name="Run", datatype=DataType.BOOLEAN, value=True)
    add_metric(payload, name="Label", datatype=DataType.STRING, value="é")
    add_metric(payload, name="Count", datatype=DataType.UINT64, value=2**40)
    # Payload: timestamp=1, metrics=2, seq=3. Metric: name=1, alias=2, timestamp=3,
    # datatype=4, float=12, double=13, boolean=14, string=15, long=11.
    m1 = ld(1, b"Motor/Speed") + vint(2, 5) + vint(4, 9) + f32(12, 1.5)
    m2 = vint(2, 6) + vint(3, 42) + vint(4, 10) + f64(13, -2.25)
    m3 = ld(1, b"Run") + vint(4, 11) + vint(14, 1)
    m4 = ld(1, b"Label") + vint(4, 12) + ld(15, "é".encode())
    m5 = ld(1, b"Count") + vint(4, 8) + vint(11, 2**40)
    expected = (
        vint(1, 1_700_000_000_123)
        + ld(2, m1)
        + ld(2, m2)
        + ld(2, m3)
        + ld(2, m4)
        + ld(2, m5)
        + vint(3, 7)
    )
    assert payload.SerializeToString() == expected


def test_hand_written_bytes_decode_including_properties_and_null() -> None:
    props = ld(1, b"engUnit") + ld(2, vint(1, 12) + ld(8, b"rpm"))  # PropertySet
    props += ld(1, b"engHigh") + ld(2, vint(1, 10) + f64(6, 3000.0))
    metric_a = ld(1, b"speed") + vint(2, 1) + vint(4, 3) + ld(9, props) + vint(10, 1234)
    metric_b = ld(1, b"gone") + vint(4, 9) + vint(7, 1)  # is_null
    data = vint(1, 99) + ld(2, metric_a) + ld(2, metric_b) + vint(3, 255)
    payload = decode_payload(data)
    assert payload.timestamp == 99
    assert payload.seq == 255
    a, b = payload.metrics
    assert (a.name, a.alias, metric_value(a, a.datatype)) == ("speed", 1, 1234)
    assert property_values(a.properties) == {"engUnit": "rpm", "engHigh": 3000.0}
    assert metric_value(b, b.datatype) is None


@pytest.mark.parametrize(
    ("datatype", "field", "raw", "expected"),
    [
        # Java and C sign-extend to 32 bits; others write the type's own width
        (DataType.INT8, 10, 0xFFFF_FFFF, -1),
        (DataType.INT8, 10, 0xFF, -1),
        (DataType.INT8, 10, 0x80, -128),
        (DataType.INT16, 10, 0xFFFF_FFFE, -2),
        (DataType.INT16, 10, 0xFFFE, -2),
        (DataType.INT32, 10, 0x8000_0000, -(2**31)),
        (DataType.INT64, 11, 2**64 - 5, -5),
        (DataType.UINT32, 11, 2**32 - 1, 2**32 - 1),  # some encoders use long_value
        (DataType.UINT16, 10, 65535, 65535),
        (DataType.DATETIME, 11, 1_700_000_000_000, 1_700_000_000_000),
    ],
)
def test_integers_are_read_at_their_own_width(
    datatype: DataType, field: int, raw: int, expected: int
) -> None:
    data = ld(2, vint(4, int(datatype)) + vint(field, raw))
    (metric,) = decode_payload(data).metrics
    assert metric_value(metric, metric.datatype) == expected


def test_value_in_the_wrong_field_or_complex_type_is_a_decode_error() -> None:
    (wrong,) = decode_payload(ld(2, vint(4, int(DataType.FLOAT)) + ld(15, b"x"))).metrics
    with pytest.raises(SparkplugDecodeError, match="FLOAT value in string_value"):
        metric_value(wrong, wrong.datatype)
    (dataset,) = decode_payload(ld(2, vint(4, int(DataType.DATASET)) + ld(17, b""))).metrics
    with pytest.raises(SparkplugDecodeError, match="not supported"):
        metric_value(dataset, dataset.datatype)
    (empty,) = decode_payload(ld(2, vint(4, int(DataType.INT32)))).metrics
    with pytest.raises(SparkplugDecodeError, match="no value"):
        metric_value(empty, empty.datatype)
    with pytest.raises(SparkplugDecodeError, match="unknown datatype"):
        metric_value(empty, 99)


def test_out_of_range_values_are_refused_when_encoding() -> None:
    payload = new_payload(timestamp_ms=0)
    with pytest.raises(ValueError, match="does not fit INT8"):
        add_metric(payload, name="x", datatype=DataType.INT8, value=128)
    with pytest.raises(ValueError, match="does not fit UINT32"):
        add_metric(payload, name="x", datatype=DataType.UINT32, value=-1)


_VALUES = {
    DataType.INT8: st.integers(-(2**7), 2**7 - 1),
    DataType.INT16: st.integers(-(2**15), 2**15 - 1),
    DataType.INT32: st.integers(-(2**31), 2**31 - 1),
    DataType.INT64: st.integers(-(2**63), 2**63 - 1),
    DataType.UINT8: st.integers(0, 2**8 - 1),
    DataType.UINT16: st.integers(0, 2**16 - 1),
    DataType.UINT32: st.integers(0, 2**32 - 1),
    DataType.UINT64: st.integers(0, 2**64 - 1),
    DataType.DATETIME: st.integers(0, 2**63 - 1),
    DataType.FLOAT: st.floats(width=32, allow_nan=False),
    DataType.DOUBLE: st.floats(allow_nan=False),
    DataType.BOOLEAN: st.booleans(),
    DataType.STRING: st.text(),
    DataType.TEXT: st.text(),
    DataType.UUID: st.uuids().map(str),
    DataType.BYTES: st.binary(),
}

metrics = st.one_of(
    [
        st.tuples(st.just(dt), st.one_of(st.none(), values), st.integers(0, 2**64 - 1))
        for dt, values in _VALUES.items()
    ]
)


@settings(max_examples=150, deadline=None)
@given(
    items=st.lists(metrics, max_size=12),
    seq=st.integers(0, 255),
    ts=st.integers(0, 2**64 - 1),
)
def test_round_trip_keeps_every_value(
    items: list[tuple[DataType, object, int]], seq: int, ts: int
) -> None:
    payload = new_payload(timestamp_ms=ts, seq=seq)
    for i, (datatype, value, alias) in enumerate(items):
        add_metric(
            payload,
            name=f"m{i}",
            alias=alias,
            datatype=datatype,
            value=value,  # type: ignore[arg-type]
            properties={"engUnit": "bar", "engLow": -1.5, "scale": 3, "ok": True},
        )
    decoded = decode_payload(payload.SerializeToString())
    assert (decoded.seq, decoded.timestamp) == (seq, ts)
    assert len(decoded.metrics) == len(items)
    for metric, (datatype, value, alias) in zip(decoded.metrics, items, strict=True):
        assert metric.alias == alias
        assert metric.datatype == int(datatype)
        got = metric_value(metric, metric.datatype)
        if datatype is DataType.FLOAT and value is not None:
            assert isinstance(value, float)
            expected = struct.unpack("<f", struct.pack("<f", value))[0]
            assert got == expected or (math.isinf(expected) and got == expected)
        else:
            assert got == value
        assert property_values(metric.properties) == {
            "engUnit": "bar",
            "engLow": -1.5,
            "scale": 3,
            "ok": True,
        }


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_garbage_never_raises_anything_but_a_decode_error(data: bytes) -> None:
    try:
        payload = decode_payload(data)
    except SparkplugDecodeError:
        return
    for metric in payload.metrics:
        with contextlib.suppress(SparkplugDecodeError):
            metric_value(metric, metric.datatype)
        property_values(metric.properties)


def test_topics() -> None:
    assert parse_topic("spBv1.0/plant/DDATA/edge-1/press 1") == SparkplugTopic(
        "plant", MessageType.DDATA, "edge-1", "press 1"
    )
    assert parse_topic("spBv1.0/plant/NBIRTH/edge-1") == SparkplugTopic(
        "plant", MessageType.NBIRTH, "edge-1"
    )
    assert parse_topic("spBv1.0/STATE/scada") == SparkplugTopic("", MessageType.STATE, "scada")
    for bad in (
        "spBv1.0/plant/NBIRTH/edge-1/dev",  # node message with a device
        "spBv1.0/plant/DDATA/edge-1",  # device message without one
        "spBv1.0/plant/XDATA/edge-1",
        "spAv1.0/plant/NDATA/edge-1",
        "spBv1.0//NDATA/edge-1",
        "spBv1.0/plant/STATE/edge-1",
        "spBv1.0",
    ):
        assert parse_topic(bad) is None, bad
    assert topic_for("g", MessageType.NCMD, "n") == "spBv1.0/g/NCMD/n"
    assert topic_for("g", MessageType.DCMD, "n", "d") == "spBv1.0/g/DCMD/n/d"


def test_state_messages() -> None:
    assert parse_state(state_payload(online=True, timestamp_ms=5)) == (True, 5)
    assert parse_state(b'{"online": false, "timestamp": 1700000000000}') == (
        False,
        1_700_000_000_000,
    )
    for bad in (b"ONLINE", b"[]", b'{"online": 1, "timestamp": 5}', b'{"online": true}'):
        assert parse_state(bad) is None
