"""Fuzz the MQTT JSON connector's payload mapping with what a plant's broker may carry.

Any device or gateway can publish on a subscribed topic: bytes that are no JSON, JSON
of any shape, values of the wrong type or out of range, timestamps as text or numbers of
any size, topics whose wildcard levels make odd tag paths. Each configured value either
becomes a point (Good, or Uncertain with the receive time) or a Bad-quality point with a
reason; :meth:`JsonMapping.decode` itself never raises.
"""

from __future__ import annotations

import json
import math
from typing import Any

from hypothesis import example, given
from hypothesis import strategies as st

from shopfloor.config.connectors.mqtt import MqttConnectorConfig
from shopfloor.edge.connectors.mqtt import JsonMapping, Points
from shopfloor.model import Quality
from shopfloor.model.tags import validate_path

from .fuzzing import FUZZ, json_values, scalars

CONFIG = MqttConnectorConfig(
    name="plant",
    asset="acme/p1",
    max_tags=50,
    max_payload=2048,
    tags=[
        {"name": "temp", "path": "line/{1}/temp", "topic": "plant/+/temp", "pointer": "/value",
         "timestamp": "/ts"},
        {"name": "state", "topic": "plant/m1/state", "pointer": "/s/0", "data_type": "int16"},
        {"name": "bit3", "topic": "plant/m1/state", "pointer": "/s/1", "data_type": "uint16",
         "bit": 3},
        {"name": "label", "topic": "plant/m1/label", "data_type": "string",
         "timestamp": "/t", "timestamp_format": "iso8601"},
        {"name": "run", "topic": "plant/m1/run", "pointer": "/on", "data_type": "bool",
         "timestamp": "/t", "timestamp_format": "ms"},
        {"name": "{1}", "topic": "raw/#", "pointer": "/v", "data_type": "float32"},
    ],
)  # fmt: skip
TOPICS = ["plant/m1/temp", "plant/m1/state", "plant/m1/label", "plant/m1/run", "raw/a/b"]

timestamps = (
    st.integers()
    | st.floats()
    | st.sampled_from(["2026-01-01T00:00:00Z", "0001-01-01T00:00:00+14:00", "9999-12-31", "x"])
    | st.text(max_size=30)
)
documents = json_values() | st.fixed_dictionaries(
    {},
    optional={
        "value": scalars,
        "ts": timestamps,
        "t": timestamps,
        "s": st.lists(scalars, max_size=3),
        "on": scalars,
        "v": scalars,
    },
)
topics = (
    st.sampled_from(TOPICS)
    | st.builds("plant/{}/temp".format, st.text(max_size=12))
    | st.builds("raw/{}".format, st.text(max_size=20))
)


def _payload(doc: Any) -> bytes:
    return json.dumps(doc, allow_nan=True).encode()


def _check(out: Points) -> None:
    batch = out.batch()
    texts = batch.text.to_pylist() if batch.text is not None else [None] * len(batch)
    for path, value, quality, text in zip(
        batch.paths(), batch.value, batch.quality, texts, strict=True
    ):
        validate_path(str(path))
        if quality in (Quality.GOOD, Quality.UNCERTAIN):
            assert text is not None or math.isfinite(value), (path, value)


@given(topic=topics, doc=documents)
@example(topic="plant/m1/temp", doc={"value": 1.0, "ts": 10**400})
@example(topic="plant/m1/state", doc={"s": [2**70, 1e308]})
@example(topic="raw/../x", doc={"v": 1})
@FUZZ
def test_any_json_message_becomes_points_or_bad_quality(topic: str, doc: Any) -> None:
    mapping = JsonMapping(CONFIG)
    out = Points()
    mapping.decode(topic, _payload(doc), 1_764_000_000_000_000_000, out)
    _check(out)


@given(
    messages=st.lists(st.tuples(topics, st.binary(max_size=80) | documents.map(_payload)),
                      max_size=6),
)  # fmt: skip
@FUZZ
def test_any_bytes_on_any_topic_never_raise(messages: list[tuple[str, bytes]]) -> None:
    mapping = JsonMapping(CONFIG)
    out = Points()
    for topic, payload in messages:
        mapping.decode(topic, payload, 1_764_000_000_000_000_000, out)
    _check(out)
    assert len(mapping.tags()) <= 5 + CONFIG.max_tags
