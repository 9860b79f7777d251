"""What the analytics keep: the protocol of the analytics store and its value types.

Two implementations: :class:`~.store.AnalyticsStore` (one SQLite file, a single server)
and :class:`~.pg_store.PgAnalyticsStore` (tables in a shared PostgreSQL historian's
schema, so every API server reads the same hours and operator reasons). Both are
blocking: :class:`~.service.Analytics` calls them from one thread of its own.

Nothing here assumes that this process computed the hours it finds stored: with a
shared store another server (or, with leases, the owner of the machine's partition)
may have stored them, and a reason assigned anywhere forgets them for everyone.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, Protocol

from shopfloor.errors import ShopfloorError
from shopfloor.server.analytics.energy import ENERGY_COMPONENTS, EnergySlices
from shopfloor.server.analytics.oee import COMPONENTS, HOUR_NS, Slices

__all__ = [
    "GROUP_KEYS",
    "KINDS",
    "AnalyticsStorage",
    "AnalyticsStoreError",
    "GroupSums",
    "ReasonAssignment",
    "slice_rows",
]

GROUP_KEYS: Final = {
    "hour": "hour_ns",
    "shift": "shift, shift_start_ns",
    "day": "day",
    "none": "''",
}
"""The SQL grouping columns of each grouping of :meth:`AnalyticsStorage.sum_hours`."""

KINDS: Final[dict[str, tuple[str, str, tuple[str, ...], str]]] = {
    "oee": ("oee_slices", "oee_hours", COMPONENTS, "settings"),
    "energy": ("energy_slices", "energy_hours", ENERGY_COMPONENTS, "energy_settings"),
}
"""Per kind of stored hours: slice table, hours table, components, settings key. Energy
is stored beside OEE the same way (its own tables: a machine without parts has energy
hours and no OEE hours)."""


class AnalyticsStoreError(ShopfloorError):
    """The analytics store cannot be written or read (disk full, damaged file, database
    unreachable)."""


@dataclass(frozen=True, slots=True)
class ReasonAssignment:
    """A reason an operator gave a stop: who, when, and what it replaced."""

    equipment: str
    start_ns: int
    reason: int
    previous: int | None
    user: str
    comment: str
    assigned_ns: int


@dataclass(frozen=True, slots=True)
class GroupSums:
    """The summed components of one group of stored slices."""

    key: tuple[object, ...]
    start_ns: int
    end_ns: int
    sums: dict[str, float]


class AnalyticsStorage(Protocol):
    """Stored OEE and energy hours, and operator-assigned stop reasons with their log."""

    def close(self) -> None:
        """Release the file or connection."""
        ...

    def put_hours(
        self,
        equipment: str,
        slices: Slices | EnergySlices,
        *,
        shift_names: Sequence[str],
        days: Sequence[str],
        computed_ns: int,
        kind: str = "oee",
        epoch: int | None = None,
    ) -> bool:
        """Store the slices of whole hours, replacing those hours, in one transaction
        (storing the same hours twice leaves them stored once); not if the machine's
        hours were forgotten since :meth:`epoch` gave ``epoch``. Whether they were stored."""
        ...

    def epoch(self, equipment: str) -> int:
        """A number that moves each time the machine's stored hours are forgotten: read
        before computing hours, so hours computed from what a reason change or late
        points made stale are not stored after the forgetting (by any server)."""
        ...

    def count_hours(
        self, equipment: Sequence[str], start_ns: int, end_ns: int, *, kind: str = "oee"
    ) -> dict[str, int]:
        """Per machine, how many hours starting in ``[start_ns, end_ns)`` are stored."""
        ...

    def stored_hours(
        self, equipment: Sequence[str], start_ns: int, end_ns: int, *, kind: str = "oee"
    ) -> dict[str, set[int]]:
        """Per machine, the stored hours starting in ``[start_ns, end_ns)``."""
        ...

    def sum_hours(
        self, equipment: Sequence[str], start_ns: int, end_ns: int, group: str, *, kind: str = "oee"
    ) -> list[GroupSums]:
        """Summed components of the stored hours in ``[start_ns, end_ns)``, per group
        (``hour``, ``shift``, ``day`` or ``none``): one SQL ``SUM … GROUP BY``."""
        ...

    def invalidate(self, equipment: str, start_ns: int, end_ns: int) -> None:
        """Forget the stored hours (OEE and energy) overlapping ``[start_ns, end_ns)``,
        moving the machine's :meth:`epoch`."""
        ...

    def settings_changed(self, fingerprint: str, *, kind: str = "oee") -> bool:
        """Whether the hours of ``kind`` were computed with other settings; if so they are
        all forgotten (the reasons stay) and ``fingerprint`` is kept for next time."""
        ...

    def assign_reason(
        self, equipment: str, start_ns: int, reason: int, *, user: str, comment: str, now_ns: int
    ) -> ReasonAssignment:
        """Store an operator's reason for the stop starting at ``start_ns``, and log it."""
        ...

    def reasons(self, equipment: str, start_ns: int, end_ns: int) -> dict[int, int]:
        """Operator reasons of one machine's stops starting in ``[start_ns, end_ns)``."""
        ...

    def assignments(
        self, equipment: str, start_ns: int, end_ns: int
    ) -> dict[int, ReasonAssignment]:
        """Who assigned which reason to the stops starting in ``[start_ns, end_ns)``."""
        ...


def slice_rows(
    equipment: str,
    slices: Slices | EnergySlices,
    components: Sequence[str],
    *,
    shift_names: Sequence[str],
    days: Sequence[str],
) -> tuple[list[int], list[tuple[object, ...]]]:
    """The whole hours the slices cover, and their rows in table column order."""
    hours = sorted({int(h) for h in slices.start // HOUR_NS * HOUR_NS})
    cols = [slices.values[c] for c in components]
    rows = [
        (
            equipment,
            int(slices.start[i]),
            int(slices.end[i]),
            int(slices.start[i] // HOUR_NS * HOUR_NS),
            shift_names[slices.shift[i]] if slices.shift[i] >= 0 else "",
            int(slices.shift_start[i]),
            days[i],
            *(float(c[i]) for c in cols),
        )
        for i in range(len(slices))
    ]
    return hours, rows
