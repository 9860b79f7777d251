"""The Sparkplug B host's state machine, fed hand-made messages (no broker)."""

from __future__ import annotations

import logging
import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shopfloor.config.connectors.sparkplug import SparkplugConnectorConfig
from shopfloor.edge.connectors.mqtt import BAD_NO_DATA, BAD_TYPE_MISMATCH, Points
from shopfloor.edge.connectors.sparkplug import Rebirth, RepublishState, SparkplugHost, sanitize
from shopfloor.model import DataType as TagType
from shopfloor.model import PointBatch, Quality
from shopfloor.sparkplug import (
    BD_SEQ,
    DataType,
    MessageType,
    add_metric,
    new_payload,
    state_payload,
    topic_for,
)

T0_MS = 1_700_000_000_000


class FakeNode:
    """Builds the messages of one edge node, keeping its sequence numbers."""

    def __init__(self, group: str = "Plant 1", node: str = "Edge-1", bd_seq: int = 3) -> None:
        self.group, self.node, self.bd_seq = group, node, bd_seq
        self.seq = 0

    def _next(self) -> int:
        self.seq = (self.seq + 1) % 256
        return self.seq

    def nbirth(self) -> tuple[str, bytes]:
        self.seq = 0
        p = new_payload(timestamp_ms=T0_MS, seq=0)
        add_metric(p, name=BD_SEQ, datatype=DataType.INT64, value=self.bd_seq)
        add_metric(p, name="Node Control/Rebirth", datatype=DataType.BOOLEAN, value=False)
        add_metric(p, name="Uptime", alias=1, datatype=DataType.INT64, value=5)
        return topic_for(self.group, MessageType.NBIRTH, self.node), p.SerializeToString()

    def dbirth(self, device: str = "Press 7") -> tuple[str, bytes]:
        p = new_payload(timestamp_ms=T0_MS, seq=self._next())
        add_metric(
            p,
            name="Motor/Speed (rpm)",
            alias=10 if device == "Press 7" else 20,
            datatype=DataType.FLOAT,
            value=100.0,
            timestamp_ms=T0_MS + 1,
            properties={"engUnit": "rpm", "engLow": 0.0, "engHigh": 3000.0},
        )
        add_metric(
            p,
            name="Running",
            alias=11 if device == "Press 7" else 21,
            datatype=DataType.BOOLEAN,
            value=True,
        )
        add_metric(p, name="Recipe", datatype=DataType.STRING, value="A")
        return topic_for(self.group, MessageType.DBIRTH, self.node, device), p.SerializeToString()

    def ddata(
        self, *metrics: dict[str, Any], device: str = "Press 7", seq: int | None = None
    ) -> tuple[str, bytes]:
        p = new_payload(timestamp_ms=T0_MS + 500, seq=self._next() if seq is None else seq)
        for m in metrics:
            add_metric(p, **m)
        return topic_for(self.group, MessageType.DDATA, self.node, device), p.SerializeToString()

    def ddeath(self, device: str = "Press 7") -> tuple[str, bytes]:
        p = new_payload(timestamp_ms=T0_MS, seq=self._next())
        return topic_for(self.group, MessageType.DDEATH, self.node, device), p.SerializeToString()

    def ndeath(self, bd_seq: int | None = None) -> tuple[str, bytes]:
        p = new_payload(timestamp_ms=T0_MS)
        add_metric(
            p, name=BD_SEQ, datatype=DataType.INT64, value=self.bd_seq if bd_seq is None else bd_seq
        )
        return topic_for(self.group, MessageType.NDEATH, self.node), p.SerializeToString()


class Harness:
    def __init__(self, **config: Any) -> None:
        self.now = 0.0
        cfg = SparkplugConnectorConfig(name="scada", **{"asset": "acme", **config})
        self.host = SparkplugHost(cfg, monotonic=lambda: self.now)
        self.host.reset(session_ms=T0_MS)

    def feed(self, *messages: tuple[str, bytes]) -> tuple[PointBatch, list[Any]]:
        out = Points()
        commands: list[Any] = []
        for topic, payload in messages:
            commands += self.host.handle(topic, payload, 7, out)
        return out.batch(), commands


def rows(batch: PointBatch) -> dict[str, tuple[float | str | None, int, int]]:
    texts = batch.text.to_pylist() if batch.text is not None else [None] * len(batch)
    out = {}
    for path, ts, value, quality, text in zip(
        batch.paths(), batch.ts, batch.value, batch.quality, texts, strict=True
    ):
        out[str(path)] = (
            text if text is not None else (None if math.isnan(value) else float(value)),
            int(ts),
            int(quality),
        )
    return out


SPEED = "acme/plant_1/edge-1/press_7/motor/speed_rpm"
RUNNING = "acme/plant_1/edge-1/press_7/running"
RECIPE = "acme/plant_1/edge-1/press_7/recipe"
UPTIME = "acme/plant_1/edge-1/uptime"


def test_sanitize() -> None:
    assert sanitize("Motor/Speed (rpm)") == "motor/speed_rpm"
    assert sanitize("//Öl-Temperatur  (°C)//x") == "öl-temperatur_c/x"
    assert sanitize("a+b#c") == "a_b_c"
    assert sanitize("a.b-c_d") == "a.b-c_d"


def test_births_announce_tags_and_deliver_values_then_data_by_alias() -> None:
    h = Harness()
    node = FakeNode()
    batch, commands = h.feed(node.nbirth(), node.dbirth())
    assert commands == []
    metas = {m.path: m for m in h.host.new_tags}
    assert set(metas) == {UPTIME, SPEED, RUNNING, RECIPE}  # no bdSeq, no Node Control
    assert (metas[SPEED].unit, metas[SPEED].eng_low, metas[SPEED].eng_high) == ("rpm", 0, 3000)
    assert metas[SPEED].data_type is TagType.FLOAT
    assert metas[RUNNING].data_type is TagType.BOOL
    assert metas[RECIPE].data_type is TagType.STRING
    assert metas[UPTIME].data_type is TagType.INT
    got = rows(batch)
    assert got[SPEED] == (100.0, (T0_MS + 1) * 10**6, Quality.GOOD)  # metric timestamp
    assert got[RUNNING] == (1.0, T0_MS * 10**6, Quality.GOOD)  # payload timestamp
    assert got[RECIPE] == ("A", T0_MS * 10**6, Quality.GOOD)

    batch, commands = h.feed(
        node.ddata({"alias": 10, "value": 250.5, "datatype": None, "timestamp_ms": T0_MS + 900}),
        node.ddata({"name": "Recipe", "value": "B"}),
    )
    assert commands == []
    got = rows(batch)
    assert got[SPEED] == (250.5, (T0_MS + 900) * 10**6, Quality.GOOD)
    assert got[RECIPE] == ("B", (T0_MS + 500) * 10**6, Quality.GOOD)


def test_sequence_wraps_after_255_without_a_rebirth() -> None:
    h = Harness()
    node = FakeNode()
    h.feed(node.nbirth(), node.dbirth())
    values = []
    for i in range(300):
        batch, commands = h.feed(node.ddata({"alias": 10, "value": float(i)}))
        assert commands == []
        values.append(rows(batch)[SPEED][0])
    assert values == [float(i) for i in range(300)]


def test_a_gap_requests_one_rebirth_ignores_data_until_the_birth_and_asks_again_later(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    h = Harness(rebirth_timeout="5s")
    node = FakeNode()
    h.feed(node.nbirth(), node.dbirth())
    node.seq += 1  # one message lost
    batch, commands = h.feed(node.ddata({"alias": 10, "value": 1.0}))
    assert commands == [Rebirth("Plant 1", "Edge-1")]
    assert len(batch) == 0
    batch, commands = h.feed(*[node.ddata({"alias": 10, "value": 2.0}) for _ in range(5)])
    assert (len(batch), commands) == (0, [])  # ignored, and not asked again yet
    h.now += 6
    _, commands = h.feed(node.ddata({"alias": 10, "value": 3.0}))
    assert commands == [Rebirth("Plant 1", "Edge-1")]
    batch, commands = h.feed(node.nbirth(), node.dbirth(), node.ddata({"alias": 10, "value": 4.0}))
    assert commands == []
    assert rows(batch)[SPEED][0] == 4.0
    gaps = [r for r in caplog.records if "sequence gap" in r.getMessage()]
    assert len(gaps) == 1
    assert "after a rebirth request" in caplog.text


def test_data_from_a_node_never_seen_born_requests_a_rebirth() -> None:
    h = Harness()
    node = FakeNode()
    node.seq = 40
    batch, commands = h.feed(node.ddata({"alias": 10, "value": 1.0}))
    assert (len(batch), commands) == (0, [Rebirth("Plant 1", "Edge-1")])


def test_ndeath_with_matching_bdseq_turns_every_metric_bad_once() -> None:
    h = Harness()
    node = FakeNode(bd_seq=3)
    h.feed(node.nbirth(), node.dbirth(), node.dbirth("Press 8"))
    batch, _ = h.feed(node.ndeath(bd_seq=2))  # a stale will of an older session
    assert len(batch) == 0
    batch, _ = h.feed(node.ndeath())
    got = rows(batch)
    press_8 = SPEED.replace("press_7", "press_8")
    assert set(got) == {UPTIME, SPEED, RUNNING, RECIPE, press_8, RUNNING.replace("7", "8"),
                        RECIPE.replace("7", "8")}  # fmt: skip
    assert {q for _, _, q in got.values()} == {Quality.BAD_NOT_CONNECTED}
    assert all(v is None for v, _, _ in got.values())
    batch, _ = h.feed(node.ndeath())
    assert len(batch) == 0  # once
    batch, _ = h.feed(node.nbirth(), node.dbirth())
    assert rows(batch)[SPEED][2] == Quality.GOOD


def test_ddeath_turns_only_that_device_bad() -> None:
    h = Harness()
    node = FakeNode()
    h.feed(node.nbirth(), node.dbirth(), node.dbirth("Press 8"))
    batch, commands = h.feed(node.ddeath("Press 8"))
    assert commands == []
    assert set(rows(batch)) == {
        SPEED.replace("press_7", "press_8"),
        RUNNING.replace("7", "8"),
        RECIPE.replace("7", "8"),
    }
    batch, _ = h.feed(node.ddata({"alias": 10, "value": 9.0}))
    assert rows(batch)[SPEED][0] == 9.0


def test_unknown_alias_is_ignored_logged_once_and_asks_for_a_rebirth(
    caplog: pytest.LogCaptureFixture,
) -> None:
    h = Harness()
    node = FakeNode()
    h.feed(node.nbirth(), node.dbirth())
    batch, commands = h.feed(
        node.ddata({"alias": 999, "value": 1.0}, {"alias": 10, "value": 5.0}),
        node.ddata({"alias": 999, "value": 2.0}),
    )
    assert rows(batch) == {SPEED: (5.0, (T0_MS + 500) * 10**6, Quality.GOOD)}
    assert commands == [Rebirth("Plant 1", "Edge-1")]
    assert caplog.text.count("unknown alias 999") == 1


def test_garbage_and_hostile_payloads_are_survived(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    h = Harness()
    node = FakeNode()
    h.feed(node.nbirth(), node.dbirth())
    topic = topic_for("Plant 1", MessageType.DDATA, "Edge-1", "Press 7")
    batch, commands = h.feed((topic, b"\xff\x00garbage"), (topic, b"\x0a\xff\xff\xff\xff\x0f"))
    assert (len(batch), commands) == (0, [])
    assert caplog.text.count("undecodable message ignored") == 1
    # a float metric whose value comes as a string: Bad, logged once per transition
    batch, _ = h.feed(node.ddata({"alias": 10, "datatype": DataType.STRING, "value": "fast"}))
    assert rows(batch)[SPEED] == (None, (T0_MS + 500) * 10**6, BAD_TYPE_MISMATCH)
    h.feed(node.ddata({"alias": 10, "datatype": DataType.STRING, "value": "faster"}))
    assert caplog.text.count("is Bad") == 1
    batch, _ = h.feed(node.ddata({"alias": 10, "value": 7.0}))
    assert rows(batch)[SPEED][2] == Quality.GOOD
    assert caplog.text.count("recovered") == 1


def test_null_and_quality_property() -> None:
    h = Harness()
    node = FakeNode()
    h.feed(node.nbirth(), node.dbirth())
    batch, _ = h.feed(
        node.ddata(
            {"alias": 10, "value": None},
            {"alias": 11, "value": True, "properties": {"Quality": 500}},
        )
    )
    got = rows(batch)
    assert got[SPEED][0] is None
    assert got[SPEED][2] == BAD_NO_DATA
    assert got[RUNNING][2] == Quality.UNCERTAIN_LAST_USABLE_VALUE


def test_paths_from_tags_devices_and_only_configured() -> None:
    h = Harness(
        devices={"Plant 1/Edge-1/Press 7": "acme/site/moulding/press-7"},
        tags=[
            {
                "name": "rpm",
                "path": "acme/site/moulding/press-7/spindle",
                "group": "Plant 1",
                "node": "Edge-1",
                "device": "Press 7",
                "metric": "Motor/Speed (rpm)",
                "unit": "1/min",
            }
        ],
        only_configured=True,
    )
    assert [m.path for m in h.host.tags()] == ["acme/site/moulding/press-7/spindle"]
    node = FakeNode()
    batch, _ = h.feed(node.nbirth(), node.dbirth())
    assert set(rows(batch)) == {
        "acme/site/moulding/press-7/spindle",
        "acme/site/moulding/press-7/running",
        "acme/site/moulding/press-7/recipe",
    }  # Uptime (a node metric) is neither configured nor mapped


def test_own_state_set_offline_while_connected_is_answered() -> None:
    h = Harness()
    stale = ("spBv1.0/STATE/scada", state_payload(online=False, timestamp_ms=T0_MS - 1))
    assert h.feed(stale)[1] == []
    fresh = ("spBv1.0/STATE/scada", state_payload(online=False, timestamp_ms=T0_MS))
    assert h.feed(fresh)[1] == [RepublishState()]
    other = ("spBv1.0/STATE/other", state_payload(online=False, timestamp_ms=T0_MS))
    assert h.feed(other)[1] == []


def test_a_metric_whose_name_sanitizes_to_nothing_is_skipped(
    caplog: pytest.LogCaptureFixture,
) -> None:
    h = Harness()
    node = FakeNode()
    h.feed(node.nbirth())
    p = new_payload(timestamp_ms=T0_MS, seq=node._next())
    add_metric(p, name="(°)", alias=50, datatype=DataType.DOUBLE, value=1.0)
    batch, _ = h.feed((topic_for("Plant 1", MessageType.DBIRTH, "Edge-1", "Press 7"),
                       p.SerializeToString()))  # fmt: skip
    assert len(batch) == 0
    assert "has no usable name" in caplog.text


def test_node_count_is_bounded() -> None:
    h = Harness(max_nodes=2)
    for i in range(5):
        h.feed(FakeNode(node=f"n{i}").nbirth())
    assert len(h.host.tags()) == 2


_RANDOM_METRIC = st.fixed_dictionaries(
    {
        "alias": st.one_of(st.none(), st.integers(0, 30)),
        "name": st.one_of(st.none(), st.sampled_from(["Running", "Recipe", "x/y", "", "#+"])),
        "datatype": st.one_of(st.none(), st.sampled_from(list(DataType))),
        "value": st.one_of(st.none(), st.booleans(), st.integers(0, 255), st.text(max_size=5)),
    }
)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.tuples(st.sampled_from(["nbirth", "dbirth", "ddeath", "ndeath"]), st.integers()),
            st.tuples(st.just("ddata"), st.lists(_RANDOM_METRIC, max_size=4), st.integers(0, 300)),
            st.tuples(st.just("garbage"), st.binary(max_size=40)),
        ),
        max_size=25,
    )
)
def test_any_sequence_of_messages_is_survived(ops: list[tuple[Any, ...]]) -> None:
    h = Harness()
    node = FakeNode()
    for op in ops:
        if op[0] == "ddata":
            metrics = []
            for m in op[1]:
                datatype = m["datatype"]
                try:  # build what an encoder could send; skip what it cannot encode at all
                    probe = new_payload(timestamp_ms=0)
                    add_metric(probe, **m)
                except (ValueError, TypeError):
                    continue
                metrics.append({k: v for k, v in m.items() if k != "datatype" or datatype})
            message = node.ddata(*metrics, seq=op[2] % 256 if op[2] < 256 else None)
        elif op[0] == "garbage":
            message = (topic_for("Plant 1", MessageType.NDATA, "Edge-1"), op[1])
        else:
            message = getattr(node, op[0])()
        batch, commands = h.feed(message)
        assert all(isinstance(c, Rebirth) for c in commands)
        assert all(int(q) in _KNOWN_QUALITIES for q in batch.quality)


_KNOWN_QUALITIES = {
    Quality.GOOD,
    Quality.BAD,
    Quality.BAD_NOT_CONNECTED,
    Quality.UNCERTAIN_LAST_USABLE_VALUE,
    BAD_NO_DATA,
    BAD_TYPE_MISMATCH,
}
