"""Which machines the analytics cover, from the asset model.

A machine with a ``state`` tag has stop events; one that also has a ``part_count`` tag
and an ``ideal_cycle_s`` attribute has OEE. Conveyors and compressors have states but no
parts: they get downtime, and stay out of a line's OEE, which would otherwise count their
run time with no ideal time beside it.
"""

from __future__ import annotations

from dataclasses import dataclass

from shopfloor.server.assets import AssetModel

__all__ = ["Machine", "machines_of"]


@dataclass(frozen=True, slots=True)
class Machine:
    """One machine's identity and tags.

    Attributes:
        path: the equipment's path.
        id: the equipment's id.
        line: the line it stands in.
        ideal_cycle_s: ideal time per part; None without parts (no OEE).
        reason_labels: the reason tag's code → label (empty if it declares none).
    """

    path: str
    id: str
    line: str
    ideal_cycle_s: float | None
    reason_labels: dict[int, str]

    @property
    def oee(self) -> bool:
        """Whether OEE is computed for it."""
        return self.ideal_cycle_s is not None

    def tag(self, measurement: str) -> str:
        """The path of one of its measurements."""
        return f"{self.path}/{measurement}"


STATE, REASON, PARTS, GOOD, SCRAP = (
    "state",
    "down_reason",
    "part_count",
    "good_count",
    "scrap_count",
)


def machines_of(model: AssetModel) -> list[Machine]:
    """The machines with a ``state`` tag, in the plant file's order."""
    tags = {t.path: t for t in model.tags}
    out: list[Machine] = []
    for eq in model.equipment:
        if f"{eq.path}/{STATE}" not in tags:
            continue
        ideal = eq.attributes.get("ideal_cycle_s")
        has_parts = f"{eq.path}/{PARTS}" in tags
        reason = tags.get(f"{eq.path}/{REASON}")
        out.append(
            Machine(
                path=eq.path,
                id=eq.id,
                line=eq.line,
                ideal_cycle_s=float(ideal)
                if has_parts and isinstance(ideal, int | float) and not isinstance(ideal, bool)
                else None,
                reason_labels=dict(reason.states) if reason is not None else {},
            )
        )
    return out
