"""The load generator's batches: real wire bodies, a seq per edge, every point unique."""

from __future__ import annotations

import numpy as np

from shopfloor.config.edge import UplinkMqttSection
from shopfloor.loadgen import LoadPlan, LoadReport, _Edge, tag_path
from shopfloor.wire import ARROW_MEDIA_TYPE, decode


def test_batches_are_wire_bodies_with_rising_seqs_and_unique_points() -> None:
    plan = LoadPlan(edges=1, tags=3, samples=4)
    edge = _Edge(5, plan, UplinkMqttSection(), LoadReport())
    seen: set[tuple[str, int]] = set()
    for want_seq in (1, 2, 3):
        seq, body, produced = edge.make_batch()
        decoded = decode(body, ARROW_MEDIA_TYPE)
        assert (seq, decoded.seq, decoded.edge) == (want_seq, want_seq, "loadgen-5")
        batch = decoded.batch
        assert len(batch) == plan.batch_points == 12
        assert int(batch.ts.max()) == produced
        paths = np.asarray(batch.tags)[batch.tag_index]
        keys = set(zip(paths.tolist(), batch.ts.tolist(), strict=True))
        assert len(keys) == 12
        assert not keys & seen
        seen |= keys
    assert {p for p, _ in seen} == {tag_path(5, t) for t in range(3)}


def test_report_figures() -> None:
    report = LoadReport(acknowledged_points=1000, elapsed_s=2.0, latencies_ms=[1.0, 2.0, 3.0])
    summary = report.summary()
    assert summary["points_per_s"] == 500.0
    assert summary["latency_ms"]["p50"] == 2.0
