"""The edges registry: latest status per edge, skew estimate, bounded memory."""

from __future__ import annotations

import numpy as np
import pytest

from shopfloor.server.ingest import EdgeRegistry

SEC = 1_000_000_000
T0 = 1_764_000_000 * SEC


def test_skew_is_the_least_delayed_of_the_recent_samples() -> None:
    """Each sample is offset + one-way delay; the smallest of the last window wins."""
    rng = np.random.default_rng(3)
    offset_ns = 7_250_000_000  # the edge's clock is 7.25 s behind the platform
    delays = rng.exponential(0.05, 40) * SEC  # network and queueing, never negative
    registry = EdgeRegistry(window=16, clock=lambda: T0)
    estimates = []
    for i, delay in enumerate(delays):
        sent_edge_clock = T0 + i * SEC - offset_ns
        received = T0 + i * SEC + int(delay)
        estimates.append(
            registry.observe_clock("e1", edge_time_ns=sent_edge_clock, received_ns=received)
        )
    samples = (offset_ns + delays.astype(np.int64)) / SEC
    expected = [samples[max(0, i - 15) : i + 1].min() for i in range(len(samples))]
    np.testing.assert_allclose(estimates, expected, rtol=0, atol=1e-9)
    assert estimates[-1] == pytest.approx(7.25, abs=0.05)
    view = registry.view("e1")
    assert view is not None
    assert (view.skew_s, view.skew_samples) == (estimates[-1], 16)


def test_edge_clock_ahead_gives_negative_skew() -> None:
    registry = EdgeRegistry(clock=lambda: T0)
    skew = registry.put_status(
        "e1", {"x": 1}, edge_time_ns=T0 + 3 * 3600 * SEC, received_ns=T0 + SEC // 10
    )
    assert skew == pytest.approx(-3 * 3600 + 0.1)
    view = registry.view("e1")
    assert view is not None
    assert view.status == {"x": 1}
    assert view.status_at_ns == T0 + SEC // 10


def test_oldest_edge_is_evicted_and_counted() -> None:
    now = [T0]
    registry = EdgeRegistry(max_edges=3, clock=lambda: now[0])
    for i, edge in enumerate(["a", "b", "c", "a", "d", "e"]):
        now[0] = T0 + i * SEC
        registry.touch(edge)
    # "b" and "c" were heard from longest ago ("a" came back at 3 s)
    assert [v.edge for v in registry.views()] == ["a", "d", "e"]
    assert registry.evicted == 2
    assert registry.view("a") is not None
    assert registry.view("a").last_seen_ns == T0 + 3 * SEC  # type: ignore[union-attr]
