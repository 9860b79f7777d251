"""Scaling and report-by-exception, checked against a plain sequential reference."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from shopfloor.edge.mapping import TagSpec
from shopfloor.edge.sampling import Sampler
from shopfloor.model import PointBatch, Quality


def _reference(points, specs):  # type: ignore[no-untyped-def]
    """The obvious per-point loop: what report-by-exception means."""
    last: dict[str, tuple[float, int, int]] = {}
    out = []
    for path, ts, raw, q in sorted(points, key=lambda p: (p[0], p[1])):
        spec = specs[path]
        v = raw * spec.scale + spec.offset
        prev = last.get(path)
        report = prev is None
        if prev is not None:
            pv, pq, pts = prev
            moved = abs(v - pv) > spec.deadband if not (np.isnan(v) or np.isnan(pv)) else False
            report = (
                moved
                or np.isnan(v) != np.isnan(pv)
                or q != pq
                or (spec.max_silence_ns > 0 and ts - pts >= spec.max_silence_ns)
            )
        if report:
            last[path] = (v, q, ts)
            out.append((path, ts, v, q))
    return out


values = st.one_of(st.floats(-1e6, 1e6), st.just(float("nan")), st.sampled_from([0.0, 1.0, 1.2]))


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["a", "b", "c"]),
            st.integers(0, 10_000),
            values,
            st.sampled_from([0, int(Quality.BAD_NOT_CONNECTED)]),
        ),
        max_size=60,
        unique_by=lambda p: (p[0], p[1]),
    ),
    st.integers(1, 4),
)
def test_sampler_matches_the_sequential_reference(points, chunks) -> None:  # type: ignore[no-untyped-def]
    specs = {
        "a": TagSpec("a", scale=0.5, offset=1.0, deadband=0.2),
        "b": TagSpec("b", deadband=0.0, max_silence_ns=500),
        "c": TagSpec("c", scale=10.0, deadband=5.0, max_silence_ns=2000),
    }
    sampler = Sampler(specs.values())
    ordered = sorted(points, key=lambda p: p[1])
    got = []
    for part in np.array_split(np.arange(len(ordered)), chunks):
        batch = PointBatch.from_points([ordered[i] for i in part])
        out = sampler.process(batch)
        got += list(
            zip(out.paths(), out.ts.tolist(), out.value.tolist(), out.quality.tolist(), strict=True)
        )
    want = _reference(ordered, specs)
    key = lambda p: (p[0], p[1])  # noqa: E731
    assert [key(p) for p in sorted(got, key=key)] == [key(p) for p in sorted(want, key=key)]
    for g, w in zip(sorted(got, key=key), sorted(want, key=key), strict=True):
        assert (np.isnan(g[2]) and np.isnan(w[2])) or g[2] == w[2]


def test_unchanged_values_cost_nothing_and_text_changes_are_reported() -> None:
    sampler = Sampler([TagSpec("t/mode")])
    first = sampler.process(PointBatch.from_points([("t/mode", 1, "AUTO", 0), ("t/rpm", 1, 5, 0)]))
    assert len(first) == 2
    again = sampler.process(PointBatch.from_points([("t/mode", 2, "AUTO", 0), ("t/rpm", 2, 5, 0)]))
    assert len(again) == 0
    changed = sampler.process(PointBatch.from_points([("t/mode", 3, "MANUAL", 0)]))
    assert changed.text is not None
    assert changed.text.to_pylist() == ["MANUAL"]


def test_mark_bad_reports_each_tag_once_until_it_recovers() -> None:
    sampler = Sampler([TagSpec("d/a"), TagSpec("d/b")])
    sampler.process(PointBatch.from_points([("d/a", 1, 1.0, 0), ("d/b", 1, 2.0, 0)]))
    bad = sampler.mark_bad(["d/a", "d/b"], ts_ns=5)
    assert sorted(bad.paths()) == ["d/a", "d/b"]
    assert (bad.quality == Quality.BAD_NOT_CONNECTED).all()
    assert len(sampler.mark_bad(["d/a", "d/b"], ts_ns=6)) == 0
    back = sampler.process(PointBatch.from_points([("d/a", 7, 1.0, 0)]))
    assert len(back) == 1, "the same value after an outage is reported: quality changed"
