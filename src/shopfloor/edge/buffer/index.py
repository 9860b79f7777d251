"""The outbox's in-memory index of waiting batches, as compact columns."""

from __future__ import annotations

import bisect
from array import array
from collections.abc import Iterable

import numpy as np

from shopfloor.edge.buffer.base import OutboxError

__all__ = ["DONE", "LEASED", "WAITING", "Index"]

WAITING, LEASED, DONE = 0, 1, 2
"""States of a record: waiting to be sent, in flight, acknowledged or dropped."""


class Index:
    """Every record not yet known to be done, in seq order, as compact columns.

    About 40 bytes per batch, so a backlog of a million batches costs 40 MB, not the
    several hundred a dict of objects would.
    """

    def __init__(self) -> None:
        self.seq = array("q")
        self.loc = array("q")
        self.size = array("q")
        self.points = array("q")
        self.appended = array("q")
        self.state = bytearray()
        self.head = 0  # every position before it is done

    def __len__(self) -> int:
        return len(self.seq)

    def add(self, seq: int, loc: int, size: int, points: int, appended_ns: int) -> None:
        if self.seq and seq <= self.seq[-1]:
            raise OutboxError(f"sequence {seq} is not above {self.seq[-1]}")
        self.seq.append(seq)
        self.loc.append(loc)
        self.size.append(size)
        self.points.append(points)
        self.appended.append(appended_ns)
        self.state.append(WAITING)

    def find(self, seq: int) -> int | None:
        i = bisect.bisect_left(self.seq, seq, self.head)
        return i if i < len(self.seq) and self.seq[i] == seq else None

    def advance(self) -> None:
        """Move ``head`` past done records and drop them from memory now and then."""
        n = len(self.state)
        while self.head < n and self.state[self.head] == DONE:
            self.head += 1
        if self.head > 4096 and self.head * 2 > n:
            h = self.head
            for name in ("seq", "loc", "size", "points", "appended"):
                setattr(self, name, getattr(self, name)[h:])
            self.state = self.state[h:]
            self.head = 0

    def oldest(self) -> Iterable[int]:
        for i in range(self.head, len(self.state)):
            if self.state[i] == WAITING:
                yield i

    def newest(self) -> Iterable[int]:
        for i in range(len(self.state) - 1, self.head - 1, -1):
            if self.state[i] == WAITING:
                yield i

    def floor_and_done(self, next_seq: int) -> tuple[int, list[tuple[int, int]]]:
        """The first seq not done, and the done ranges above it (for the state file).

        Done is everything between ``floor`` and ``next_seq`` that is not waiting or
        leased: records done in an earlier run never entered this index at all.
        """
        self.advance()
        states = np.frombuffer(bytes(self.state[self.head :]), dtype=np.uint8)
        seqs = np.frombuffer(self.seq, dtype=np.int64)[self.head :]
        undone = seqs[states != DONE]
        if not len(undone):
            return next_seq, []
        floor = int(undone[0])
        ranges: list[tuple[int, int]] = []
        gaps = np.flatnonzero(np.diff(undone) > 1)
        ranges = [(int(undone[i]) + 1, int(undone[i + 1]) - 1) for i in gaps]
        last = int(undone[-1])
        if last < next_seq - 1:
            ranges.append((last + 1, next_seq - 1))
        return floor, ranges
