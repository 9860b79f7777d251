"""Fuzz Sparkplug B decoding and the host's state machine with broker messages.

Anything can arrive on ``spBv1.0/#``: bytes that are no protobuf, payloads of the right
shape with wrong datatypes, values in the wrong field, unknown aliases, property sets
nested deep, births and data in any order. The host must count and skip what it cannot
use — never raise, so one bad node cannot stop the connector.
"""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from shopfloor.config.connectors.sparkplug import SparkplugConnectorConfig
from shopfloor.edge.connectors.mqtt import Points
from shopfloor.edge.connectors.sparkplug import Rebirth, RepublishState, SparkplugHost
from shopfloor.sparkplug import MessageType, Payload, topic_for
from shopfloor.sparkplug.codec import SparkplugDecodeError, decode_payload, parse_state

from .fuzzing import FUZZ, only

U32 = st.integers(0, 2**32 - 1)
U64 = st.integers(0, 2**64 - 1)
NAMES = st.sampled_from(["bdSeq", "Node Control/Rebirth", "a", "Motor/Speed (rpm)", "", "/", "a/"])
VALUE_FIELDS: dict[str, st.SearchStrategy[Any]] = {
    "int_value": U32,
    "long_value": U64,
    "float_value": st.floats(width=32),
    "double_value": st.floats(),
    "boolean_value": st.booleans(),
    "string_value": st.text(max_size=20),
    "bytes_value": st.binary(max_size=10),
}

FIELD_OF = {
    **dict.fromkeys([1, 2, 3, 5, 6, 7], "int_value"),
    **dict.fromkeys([4, 8, 13], "long_value"),
    9: "float_value",
    10: "double_value",
    11: "boolean_value",
    **dict.fromkeys([12, 14, 15], "string_value"),
    17: "bytes_value",
}
"""Sparkplug's scalar datatypes and the field their value goes in (specification 6.4.16)."""


@st.composite
def property_sets(draw: st.DrawFn, target: Any, depth: int = 0) -> None:
    for key in draw(st.lists(st.text(max_size=8), max_size=3)):
        target.keys.append(key)
        prop = target.values.add()
        if draw(st.booleans()):
            prop.type = draw(st.integers(0, 40))
        kind = draw(st.sampled_from(["null", "scalar", "set", "sets", "none"]))
        if kind == "null":
            prop.is_null = True
        elif kind == "scalar":
            name = draw(st.sampled_from(sorted(set(VALUE_FIELDS) - {"bytes_value"})))
            setattr(prop, name, draw(VALUE_FIELDS[name]))
        elif kind == "set" and depth < 3:
            draw(property_sets(prop.propertyset_value, depth + 1))
        elif kind == "sets" and depth < 3:
            for _ in range(draw(st.integers(0, 2))):
                draw(property_sets(prop.propertysets_value.propertyset.add(), depth + 1))


@st.composite
def payloads(draw: st.DrawFn) -> Any:
    payload = Payload()
    if draw(st.booleans()):
        payload.seq = draw(st.integers(0, 300) | U64)
    if draw(st.booleans()):
        payload.timestamp = draw(U64)
    for _ in range(draw(st.integers(0, 4))):
        metric = payload.metrics.add()
        if draw(st.booleans()):  # well formed: a name, a type and its value field
            metric.name = draw(NAMES)
            metric.datatype = datatype = draw(st.sampled_from(sorted(FIELD_OF)))
            if draw(st.booleans()):
                metric.alias = draw(st.integers(0, 4))
            setattr(metric, FIELD_OF[datatype], draw(VALUE_FIELDS[FIELD_OF[datatype]]))
            continue
        if draw(st.booleans()):
            metric.name = draw(NAMES)
        if draw(st.booleans()):
            metric.alias = draw(st.integers(0, 4) | U64)
        if draw(st.booleans()):
            metric.datatype = draw(st.integers(0, 40) | U32)
        if draw(st.booleans()):
            metric.timestamp = draw(U64)
        if draw(st.booleans()):
            metric.is_null = draw(st.booleans())
        if draw(st.booleans()):
            field = draw(st.sampled_from(sorted(VALUE_FIELDS)))
            setattr(metric, field, draw(VALUE_FIELDS[field]))
        if draw(st.booleans()):
            draw(property_sets(metric.properties))
    return payload


KINDS = [t for t in MessageType if t is not MessageType.STATE]


@st.composite
def messages(draw: st.DrawFn) -> tuple[str, Any]:
    kind = draw(st.sampled_from([*KINDS, MessageType.STATE]))
    if kind is MessageType.STATE:
        body = draw(st.sampled_from([b'{"online": false, "timestamp": 9e99}', b"{}", b"[]"]))
        return "spBv1.0/STATE/scada", body
    node = draw(st.sampled_from(["n1", "n2"]))
    device = draw(st.sampled_from(["d1", "d2"])) if kind.value.startswith("D") else None
    body = draw(st.binary(max_size=40)) if draw(st.integers(0, 3)) == 0 else draw(payloads())
    return topic_for("g", kind, node, device), body


@st.composite
def births(draw: st.DrawFn) -> list[tuple[str, Any]]:
    """NBIRTH and DBIRTHs of node n1, so that data after them meets known metrics."""
    out = [(topic_for("g", MessageType.NBIRTH, "n1"), draw(payloads()))]
    for device in draw(st.lists(st.sampled_from(["d1", "d2"]), max_size=2)):
        out.append((topic_for("g", MessageType.DBIRTH, "n1", device), draw(payloads())))
    return out


def _births_first(stream: list[tuple[str, Any]]) -> list[tuple[str, Any]]:
    """The stream with every payload numbered in order per node (0 for NBIRTH), the way
    a well-behaved node sends them: the host then gets past its sequence checks to the
    births, aliases and values."""
    seqs: dict[str, int] = {}
    for topic, body in stream:
        if isinstance(body, bytes):
            continue
        node = topic.split("/")[3]
        seqs[node] = 0 if "/NBIRTH/" in topic else (seqs.get(node, 0) + 1) % 256
        body.seq = seqs[node]
    return stream


def _host(**config: Any) -> SparkplugHost:
    host = SparkplugHost(
        SparkplugConnectorConfig(name="scada", asset="acme", **config), monotonic=lambda: 0.0
    )
    host.reset(session_ms=1_700_000_000_000)
    return host


@given(body=st.binary(max_size=300))
@FUZZ
def test_arbitrary_bytes_raise_only_the_decode_error(body: bytes) -> None:
    only(SparkplugDecodeError, lambda: decode_payload(body))
    state = parse_state(body)
    assert state is None or (isinstance(state[0], bool) and isinstance(state[1], int))


@given(
    stream=st.builds(lambda b, m: b + m, births() | st.just([]), st.lists(messages(), max_size=10)),
    ordered=st.booleans(),
    max_tags=st.sampled_from([3, 10_000]),
)
@FUZZ
def test_the_host_survives_any_sequence_of_messages(
    stream: list[tuple[str, Any]], ordered: bool, max_tags: int
) -> None:
    host = _host(max_tags=max_tags)
    out = Points()
    for i, (topic, body) in enumerate(_births_first(stream) if ordered else stream):
        data = body if isinstance(body, bytes) else body.SerializeToString()
        commands = host.handle(topic, data, 1_700_000_000_000_000_000 + i, out)
        assert all(isinstance(c, Rebirth | RepublishState) for c in commands)
    batch = out.batch()  # the points make a valid batch for the sampler
    assert len(batch) == len(out)
    assert all(meta.path for meta in host.tags())


@given(topic=st.text(max_size=40), body=st.binary(max_size=60))
@FUZZ
def test_any_topic_is_handled_or_ignored(topic: str, body: bytes) -> None:
    _host().handle(topic, body, 0, Points())
