"""Shared fixtures: a simulated day of the default plant, split into per-tag columns.

Test files repeat the few time constants they need; helpers come as fixtures because
test folders here are not packages.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pytest

from shopfloor.model import PointBatch
from shopfloor.simulator import Plant

T0 = 1_704_067_200 * 10**9  # 2024-01-01T00:00:00Z
DAY_STEPS = 86_400


@dataclass
class Columns:
    """The points of one batch, per tag path (split independently of the batch's order)."""

    ts: dict[str, np.ndarray]
    value: dict[str, np.ndarray]
    quality: dict[str, np.ndarray]

    def find(self, machine: str, tag: str) -> np.ndarray:
        """Values of the one tag whose path ends in ``/machine/tag``."""
        (path,) = [p for p in self.value if p.endswith(f"/{machine}/{tag}")]
        return self.value[path]


def _split(batch: PointBatch) -> Columns:
    """Group a batch's points by tag path, each tag's points sorted by time."""
    order = np.lexsort((batch.ts, batch.tag_index))
    idx = batch.tag_index[order]
    bounds = np.flatnonzero(np.diff(idx)) + 1
    cols = Columns({}, {}, {})
    for chunk in np.split(np.arange(len(order)), bounds):
        if not len(chunk):
            continue
        rows = order[chunk]
        path = batch.tags[int(batch.tag_index[rows[0]])]
        cols.ts[path] = batch.ts[rows]
        cols.value[path] = batch.value[rows]
        cols.quality[path] = batch.quality[rows]
    return cols


@pytest.fixture(scope="session")
def day() -> Columns:
    """One simulated day of the default plant (seed 1) at 1 s, in one call."""
    return _split(Plant.default(seed=1).advance(start_ns=T0, steps=DAY_STEPS))


@pytest.fixture(scope="session")
def split() -> Callable[[PointBatch], Columns]:
    """The function that groups a batch's points by tag."""
    return _split
