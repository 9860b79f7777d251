"""Quarantined batches can be listed, exported, retried and deleted."""

from __future__ import annotations

import json
from pathlib import Path

from shopfloor.edge.buffer import StoredBatch
from shopfloor.edge.buffer.payload import encode_payload
from shopfloor.edge.buffer.quarantine import (
    Quarantine,
    QuarantinedBatch,
    delete_quarantined,
    export_quarantined,
    list_quarantined,
    retry_quarantined,
)
from shopfloor.model import PointBatch
from shopfloor.wire import JSON_MEDIA_TYPE, decode

T0 = 1_764_000_000_000_000_000


def put(q: Quarantine, seq: int, n: int) -> None:
    batch = PointBatch.from_points([(f"a/b/t{seq}", T0 + i, float(i), 0) for i in range(n)])
    stored = StoredBatch(seq=seq, points=n, appended_ns=T0, payload=encode_payload(batch))
    meta = QuarantinedBatch(
        seq=seq,
        edge="edge-q",
        points=n,
        appended_ns=T0,
        refused_ns=T0 + 5,
        status=422,
        reason='HTTP 422: {"error": {"field": "ts"}}',
        refusals=3,
    )
    q.put(stored, meta)


def test_list_export_retry_delete(tmp_path: Path) -> None:
    outbox_dir = tmp_path / "outbox"
    q = Quarantine(outbox_dir / "quarantine")
    for seq, n in ((5, 2), (9, 3), (12, 1)):
        put(q, seq, n)

    listed = list_quarantined(outbox_dir)
    assert [(m.seq, m.points, m.status) for m in listed] == [(5, 2, 422), (9, 3, 422), (12, 1, 422)]

    dest = tmp_path / "export.jsonl"
    assert export_quarantined(outbox_dir, dest, [9, 12]) == 2
    lines = dest.read_bytes().splitlines()
    decoded = [decode(line, JSON_MEDIA_TYPE) for line in lines]
    assert [(d.edge, d.seq, len(d.batch)) for d in decoded] == [("edge-q", 9, 3), ("edge-q", 12, 1)]
    assert list(decoded[0].batch.paths()) == ["a/b/t9"] * 3, "exported lines can be re-posted"

    assert retry_quarantined(outbox_dir, [5]) == 1
    assert [m.seq for m in list_quarantined(outbox_dir)] == [9, 12]
    (retry,) = q.retries()
    assert retry[0].seq == 5
    q.retried(retry[1])
    assert q.retries() == []

    assert delete_quarantined(outbox_dir, [12]) == 1
    assert [m.seq for m in list_quarantined(outbox_dir)] == [9]
    assert delete_quarantined(outbox_dir) == 1
    assert list_quarantined(outbox_dir) == []


def test_a_half_written_entry_is_not_listed(tmp_path: Path) -> None:
    q = Quarantine(tmp_path / "quarantine")
    put(q, 1, 1)
    (tmp_path / "quarantine" / "00000000000000000002.json").write_text(json.dumps({"seq": 2}))
    assert [m.seq for m in q.batches()] == [1]
    assert list_quarantined(tmp_path / "nowhere") == []
