"""The pure parts of the MQTT JSON connector: pointers, topic filters, timestamps, values."""

from __future__ import annotations

import calendar
import json
import math
from typing import Any

import aiomqtt
import pytest
from pydantic import ValidationError

from shopfloor.config.connectors.mqtt import MqttConnectorConfig
from shopfloor.edge.connectors.mqtt import (
    BAD_NO_DATA,
    BAD_OUT_OF_RANGE,
    BAD_TYPE_MISMATCH,
    BadValue,
    JsonMapping,
    Points,
    _Inbox,
    coerce_value,
    parse_pointer,
    parse_timestamp,
    resolve_pointer,
    topic_match,
)
from shopfloor.model import Quality

# RFC 6901, section 5: the document and every pointer with its value.
RFC_DOC = json.loads(
    r"""{"foo": ["bar", "baz"], "": 0, "a/b": 1, "c%d": 2, "e^f": 3, "g|h": 4,
         "i\\j": 5, "k\"l": 6, " ": 7, "m~n": 8}"""
)
RFC_CASES = [
    ("", RFC_DOC),
    ("/foo", ["bar", "baz"]),
    ("/foo/0", "bar"),
    ("/", 0),
    ("/a~1b", 1),
    ("/c%d", 2),
    ("/e^f", 3),
    ("/g|h", 4),
    ("/i\\j", 5),
    ('/k"l', 6),
    ("/ ", 7),
    ("/m~0n", 8),
]


@pytest.mark.parametrize(("pointer", "expected"), RFC_CASES)
def test_json_pointer_examples_of_rfc_6901(pointer: str, expected: object) -> None:
    assert resolve_pointer(RFC_DOC, parse_pointer(pointer)) == expected


@pytest.mark.parametrize("pointer", ["/foo/2", "/foo/01", "/foo/-", "/nope", "/foo/0/x"])
def test_missing_pointers_are_no_data(pointer: str) -> None:
    with pytest.raises(BadValue) as info:
        resolve_pointer(RFC_DOC, parse_pointer(pointer))
    assert info.value.quality == BAD_NO_DATA


# MQTT 3.1.1, section 4.7: the examples of topic wildcards.
@pytest.mark.parametrize(
    ("filter_", "topic", "matches"),
    [
        ("sport/tennis/player1/#", "sport/tennis/player1", True),
        ("sport/tennis/player1/#", "sport/tennis/player1/ranking", True),
        ("sport/tennis/player1/#", "sport/tennis/player1/score/wimbledon", True),
        ("sport/#", "sport", True),
        ("sport/tennis/+", "sport/tennis/player1", True),
        ("sport/tennis/+", "sport/tennis/player2", True),
        ("sport/tennis/+", "sport/tennis/player1/ranking", False),
        ("sport/+", "sport", False),
        ("sport/+", "sport/", True),
        ("+/+", "/finance", True),
        ("/+", "/finance", True),
        ("+", "/finance", False),
        ("#", "$SYS/broker/load", False),
        ("+/monitor/Clients", "$SYS/monitor/Clients", False),
        ("$SYS/#", "$SYS/monitor/Clients", True),
        ("$SYS/monitor/+", "$SYS/monitor/Clients", True),
    ],
)
def test_topic_filters_follow_the_mqtt_examples(filter_: str, topic: str, matches: bool) -> None:
    got = topic_match(tuple(filter_.split("/")), topic.split("/"))
    assert (got is not None) is matches


def test_wildcards_capture_their_levels() -> None:
    assert topic_match(("a", "+", "c", "#"), ["a", "m1", "c", "x", "y"]) == ["m1", "x/y"]
    assert topic_match(("a", "#"), ["a"]) == [""]


def utc_ns(*fields: int) -> int:
    """UTC ns of (year, month, day, hour, minute, second, microsecond)."""
    *ymdhms, micro = fields
    return (calendar.timegm(tuple(ymdhms)) * 10**6 + micro) * 1000


@pytest.mark.parametrize(
    ("raw", "fmt", "expected"),
    [
        ("2024-05-01T12:00:00Z", "auto", utc_ns(2024, 5, 1, 12, 0, 0, 0)),
        ("2024-05-01T14:00:00.250+02:00", "auto", utc_ns(2024, 5, 1, 12, 0, 0, 250_000)),
        ("2024-05-01 12:00:00.123456", "iso8601", utc_ns(2024, 5, 1, 12, 0, 0, 123_456)),
        (1714564800, "auto", utc_ns(2024, 5, 1, 12, 0, 0, 0)),
        (1714564800.5, "auto", utc_ns(2024, 5, 1, 12, 0, 0, 500_000)),
        (1714564800123, "auto", utc_ns(2024, 5, 1, 12, 0, 0, 123_000)),
        (1714564800123456, "auto", utc_ns(2024, 5, 1, 12, 0, 0, 123_456)),
        (1714564800123456789, "auto", utc_ns(2024, 5, 1, 12, 0, 0, 123_456) + 789),
        (1714564800, "ms", 1714564800 * 10**6),  # an explicit unit wins over the magnitude
        (5, "s", 5 * 10**9),
    ],
)
def test_timestamps(raw: object, fmt: str, expected: int) -> None:
    assert parse_timestamp(raw, fmt) == expected


@pytest.mark.parametrize(
    ("raw", "fmt"),
    [("yesterday", "auto"), (True, "auto"), (None, "auto"), ("2024", "ms"), (12, "iso8601"),
     (1e30, "s"), (float("inf"), "auto"), ("9999-01-01T00:00:00Z", "auto")],
)  # fmt: skip
def test_bad_timestamps(raw: object, fmt: str) -> None:
    with pytest.raises(BadValue):
        parse_timestamp(raw, fmt)


@pytest.mark.parametrize(
    ("raw", "data_type", "bit", "expected"),
    [
        (21.5, "float32", None, 21.5),
        (True, "float64", None, 1.0),
        (False, "bool", None, 0.0),
        (1, "bool", None, 1.0),
        (-32768, "int16", None, -32768.0),
        (65535.0, "uint16", None, 65535.0),
        (0b1010, "uint16", 1, 1.0),
        (0b1010, "uint16", 2, 0.0),
        ("RUN", "string", None, "RUN"),
        (12, "string", None, "12"),
    ],
)
def test_values(raw: object, data_type: str, bit: int | None, expected: float | str) -> None:
    assert coerce_value(raw, data_type, bit=bit) == expected


@pytest.mark.parametrize(
    ("raw", "data_type", "quality"),
    [
        (None, "float32", BAD_NO_DATA),
        ("21.5", "float32", BAD_TYPE_MISMATCH),
        ({"v": 1}, "float64", BAD_TYPE_MISMATCH),
        ([1], "string", BAD_TYPE_MISMATCH),
        (2, "bool", BAD_TYPE_MISMATCH),
        (1.5, "int32", BAD_TYPE_MISMATCH),
        (32768, "int16", BAD_OUT_OF_RANGE),
        (-1, "uint32", BAD_OUT_OF_RANGE),
        (1e39, "float32", BAD_OUT_OF_RANGE),
        (10**400, "float64", BAD_OUT_OF_RANGE),
    ],
)
def test_bad_values(raw: object, data_type: str, quality: int) -> None:
    with pytest.raises(BadValue) as info:
        coerce_value(raw, data_type)
    assert info.value.quality == quality


def config(**kwargs: Any) -> MqttConnectorConfig:
    return MqttConnectorConfig.model_validate({"name": "m", **kwargs})


def test_configuration_is_checked() -> None:
    ok = {"name": "t", "topic": "plant/+/tele/#", "path": "a/{1}/{2}/t"}
    config(tags=[ok])
    for bad in (
        {**ok, "path": "a/{3}/t"},  # only two wildcards
        {**ok, "path": "a/{0}/t"},
        {**ok, "topic": "plant/#/x"},
        {**ok, "topic": "plant/ab+/x"},
        {**ok, "pointer": "temp"},
        {**ok, "pointer": "/a~2"},
        {**ok, "address": "40001"},
    ):
        with pytest.raises(ValidationError):
            config(tags=[bad])
    with pytest.raises(ValidationError, match="password needs a username"):
        config(password_env="X")
    with pytest.raises(ValidationError, match="not both"):
        config(username="u", password_env="X", password_file="/x")


def decode(mapping: JsonMapping, topic: str, payload: object) -> dict[str, tuple[Any, int]]:
    out = Points()
    data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    mapping.decode(topic, data, 123, out)
    batch = out.batch()
    texts = batch.text.to_pylist() if batch.text is not None else [None] * len(batch)
    return {
        str(p): (t if t is not None else (None if math.isnan(v) else v), int(q))
        for p, v, q, t in zip(batch.paths(), batch.value, batch.quality, texts, strict=True)
    }


def test_one_mapping_covers_many_machines_and_announces_each_path_once() -> None:
    mapping = JsonMapping(
        config(
            asset="acme/plant-1",
            tags=[
                {"name": "temp", "path": "acme/plant-1/{1}/temp", "topic": "f/+/tele",
                 "pointer": "/t", "unit": "degC", "scale": 0.1},
                {"name": "{1}_state", "topic": "f/+/tele", "pointer": "/s", "data_type": "string"},
                {"name": "fixed", "topic": "f/m1/tele", "pointer": "/t"},
            ],
        )
    )  # fmt: skip
    assert [m.path for m in mapping.tags()] == ["acme/plant-1/fixed"]
    got = decode(mapping, "f/m1/tele", {"t": 215, "s": "RUN"})
    assert got == {
        "acme/plant-1/m1/temp": (215.0, Quality.GOOD),  # raw: the sampler scales
        "acme/plant-1/m1_state": ("RUN", Quality.GOOD),
        "acme/plant-1/fixed": (215.0, Quality.GOOD),
    }
    assert [m.path for m in mapping.new_tags] == ["acme/plant-1/m1/temp", "acme/plant-1/m1_state"]
    assert mapping.new_tags[0].unit == "degC"
    assert {s.path: s.scale for s in mapping.specs()}["acme/plant-1/m1/temp"] == 0.1
    mapping.new_tags.clear()
    decode(mapping, "f/m1/tele", {"t": 1, "s": "x"})
    decode(mapping, "f/m2/tele", {"t": 2, "s": "y"})
    assert [m.path for m in mapping.new_tags] == ["acme/plant-1/m2/temp", "acme/plant-1/m2_state"]


def test_wildcard_paths_are_bounded_and_validated(caplog: pytest.LogCaptureFixture) -> None:
    mapping = JsonMapping(
        config(max_tags=3, tags=[{"name": "v", "path": "x/{1}/v", "topic": "d/+", "pointer": ""}])
    )
    for i in range(10):
        decode(mapping, f"d/m{i}", 1)
    assert len(mapping.tags()) == 3
    assert caplog.text.count("max_tags (3) reached") == 1
    assert decode(mapping, "d/", 1) == {}  # an empty level makes no valid path
    assert "gives no valid path" in caplog.text


def test_hostile_payloads_give_bad_points_never_exceptions() -> None:
    mapping = JsonMapping(
        config(max_payload=1000, tags=[{"name": "v", "topic": "d", "pointer": "/v"}])
    )
    for payload in (
        b"\xff\xfe\x00garbage",
        b"[" * 100_000,
        b'{"v": NaN}',
        b'{"v": 1e999}',
        b"x" * 2000,
    ):
        got = decode(mapping, "d", payload)
        assert got["v"][0] is None, payload[:20]
        assert got["v"][1] & 0x80000000, payload[:20]  # Bad


async def test_the_inbox_is_bounded_drops_the_oldest_and_says_so_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    inbox = _Inbox(3, owner="m")
    messages = [aiomqtt.Message(f"t/{i}", b"1", 0, False, i, None) for i in range(5)]
    for m in messages:
        inbox.put_nowait(m)
    assert inbox.dropped == 2
    kept = inbox.take(10)
    assert [m.topic.value for m in kept] == ["t/2", "t/3", "t/4"]
    stamps = [inbox.received_ns(m) for m in kept]
    assert stamps == sorted(stamps)
    assert caplog.text.count("dropping the oldest") == 1
