"""Alarm rules split into partitions by equipment (scaled out, docs/scale-out.md).

A rule belongs to the partition of its tag's equipment (the tag path without its last
segment): ``crc32(equipment) mod N``. Every process computes the same split from the
same rules and ``alarms.partitions``, with no coordination; CRC-32 and not Python's
``hash``, which is salted per process. All the alarms of one machine are in one
partition, so their order of evaluation is the order its points were committed in.

The feed route (:data:`~shopfloor.server.historian.pg_feed.FeedRoute`) sends each point
to the partitions of the rules that read its tag (its own tag, a setpoint, an
expression's inputs — which may be on another machine).
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence

from shopfloor.server.rules.rule import AlarmRule

__all__ = ["PartitionMap", "equipment_of", "partition_of"]


def equipment_of(tag: str) -> str:
    """The equipment path of a tag path (everything before its last ``/``)."""
    return tag.rpartition("/")[0] or tag


def partition_of(equipment: str, partitions: int) -> int:
    """The partition of an equipment path, the same in every process."""
    return zlib.crc32(equipment.encode()) % partitions


class PartitionMap:
    """``rules`` split into ``partitions`` partitions.

    Raises:
        ValueError: ``partitions`` < 1.
    """

    def __init__(self, rules: Sequence[AlarmRule], partitions: int) -> None:
        if partitions < 1:
            raise ValueError("partitions must be >= 1")
        self.partitions = partitions
        by_part: dict[int, list[AlarmRule]] = {}
        route: dict[str, set[int]] = {}
        for rule in rules:
            part = partition_of(equipment_of(rule.tag), partitions)
            by_part.setdefault(part, []).append(rule)
            for tag in (rule.tag, rule.setpoint, *dict(rule.inputs).values()):
                if tag is not None:
                    route.setdefault(tag, set()).add(part)
        self._rules = {p: tuple(r) for p, r in by_part.items()}
        self._alarm_parts = {r.name: p for p, rs in by_part.items() for r in rs}
        self._by_name = {r.name: r for r in rules}
        self._route = {tag: tuple(sorted(parts)) for tag, parts in route.items()}

    def rules(self, part: int) -> tuple[AlarmRule, ...]:
        """The rules of one partition (none for most partitions of a small plant)."""
        return self._rules.get(part, ())

    def rule(self, name: str) -> AlarmRule | None:
        """The rule of the alarm called ``name`` (None: no such rule)."""
        return self._by_name.get(name)

    def part_of_alarm(self, name: str) -> int | None:
        """The partition of the alarm called ``name`` (None: no such rule)."""
        return self._alarm_parts.get(name)

    def route(self, tag: str) -> tuple[int, ...]:
        """The partitions wanting ``tag``'s points (the historian's feed route)."""
        return self._route.get(tag, ())
