"""Which requests read a poll group: pure planning, no I/O.

Every request costs a round trip, often several milliseconds on a serial line, so the
values of one poll group are read in as few requests as the protocol allows. Spans of
the same *key* (for Modbus a unit id and a table, for S7 an area and a data block) are
joined when they touch, overlap or lie at most ``max_gap`` apart, as long as the joined
request stays within ``max_span`` (125 registers or 2000 bits for Modbus, the PDU's
payload for S7). Reading a few unused addresses is far cheaper than a second request;
a device that refuses them gets its request split at the gaps by the connector.

Sorted greedy joining is optimal here: it never uses more requests than any other
grouping of the same spans under the same limits.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Span:
    """A run of addresses one value occupies.

    Attributes:
        key: what must be equal to share a request (unit and table; area and DB).
        start: first address.
        size: number of addresses (registers, bits or bytes).
    """

    key: Hashable
    start: int
    size: int


@dataclass(frozen=True, slots=True)
class Block:
    """One planned request.

    Attributes:
        key: the key of its spans.
        start: first address read.
        count: number of addresses read.
        members: indices (into the planned spans) of the values it carries.
    """

    key: Hashable
    start: int
    count: int
    members: tuple[int, ...]

    @property
    def end(self) -> int:
        """One past the last address read."""
        return self.start + self.count

    def has_gaps(self, spans: Sequence[Span]) -> bool:
        """Whether the block reads addresses that none of its members need."""
        covered = 0
        reach = self.start
        for i in sorted(self.members, key=lambda m: spans[m].start):
            s = spans[i]
            covered += max(0, s.start + s.size - max(reach, s.start))
            reach = max(reach, s.start + s.size)
        return covered < self.count


def coalesce(
    spans: Sequence[Span],
    *,
    max_gap: int,
    max_span: int | dict[Hashable, int],
) -> list[Block]:
    """Join ``spans`` into as few blocks as the limits allow.

    Args:
        spans: the values to read.
        max_gap: most unused addresses a block may read between two values.
        max_span: the most addresses one block may read, or that limit per key.

    Returns:
        Blocks ordered by key (in first-seen order) and start address. Every span is in
        exactly one block.

    Raises:
        ValueError: a span is empty, negative, or larger than its key's limit.
    """
    by_key: dict[Hashable, list[int]] = {}
    for i, s in enumerate(spans):
        limit = max_span[s.key] if isinstance(max_span, dict) else max_span
        if s.size < 1 or s.start < 0:
            raise ValueError(f"span {s} is empty or starts before 0")
        if s.size > limit:
            raise ValueError(f"span {s} is larger than one request may read ({limit})")
        by_key.setdefault(s.key, []).append(i)
    blocks: list[Block] = []
    for key, members in by_key.items():
        limit = max_span[key] if isinstance(max_span, dict) else max_span
        members.sort(key=lambda m: (spans[m].start, spans[m].size))
        current: list[int] = []
        start = end = 0
        for m in members:
            s = spans[m]
            s_end = s.start + s.size
            if current and s.start - end <= max_gap and max(end, s_end) - start <= limit:
                current.append(m)
                end = max(end, s_end)
                continue
            if current:
                blocks.append(Block(key, start, end - start, tuple(current)))
            current, start, end = [m], s.start, s_end
        if current:
            blocks.append(Block(key, start, end - start, tuple(current)))
    return blocks
