""" "What uses my disk": the storage report's values and its grouping by asset (both backends).

A backend measures per tag (:class:`TagUsage`) and per table (:class:`TableUsage`); this
module groups tags by area, equipment or tag for the API and the CLI. How bytes are
shared out is the backend's (its report's ``method`` says it in a sentence):

- DuckDB gives no size per tag: a table's bytes are the blocks its columns occupy, shared
  out by point count (rows for rollups). Points, oldest and newest are exact.
- PostgreSQL's blocks layout measures each tag's stored (compressed) arrays; what a
  table's rows and indexes hold is shared out in proportion (free space inside a table,
  left by deleted rows and reused by new ones, belongs to no tag: see its table).

Group keys follow the ISA-95 path ``enterprise/site/area/line/cell/equipment/tag``:
``tag`` is the path, ``equipment`` the asset holding the tag (the path without its last
segment), ``area`` the first three segments of that asset (fewer if the asset is shorter).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

from shopfloor.server.historian.retention_loop import RetentionCounters, RetentionReport
from shopfloor.server.historian.retention_policy import RetentionPolicy

__all__ = [
    "GROUPS",
    "Group",
    "GroupUsage",
    "StorageReport",
    "StorageReporter",
    "StorageTotals",
    "TableUsage",
    "TagUsage",
    "group_key",
    "group_usage",
    "retention_summary",
    "share_out",
]

Group = Literal["area", "equipment", "tag"]
GROUPS: tuple[Group, ...] = ("area", "equipment", "tag")
_AREA_DEPTH = 3
NO_ASSET = "(no asset)"
"""The equipment and area key of a tag whose path has a single segment."""


@dataclass(frozen=True, slots=True)
class TagUsage:
    """One tag's share of the history.

    Attributes:
        path: the tag's path.
        points: raw points stored.
        bytes: its share of the raw tables' bytes.
        oldest_ns: its oldest raw point (UTC ns), None without points.
        newest_ns: its newest raw point.
        rollup_rows: rows of rollup tables attributed to it.
        rollup_bytes: its share of the rollup tables' bytes.
    """

    path: str
    points: int
    bytes: int
    oldest_ns: int | None
    newest_ns: int | None
    rollup_rows: int = 0
    rollup_bytes: int = 0


@dataclass(frozen=True, slots=True)
class TableUsage:
    """One table of the history.

    Attributes:
        name: the table (for a partitioned table, its partitions together).
        kind: ``raw``, ``rollup_1m``, ``rollup_1h`` or ``other`` (tags, ledger, ...).
        rows: rows (for raw tables of the blocks layout: hour blocks).
        points: raw points (0 for other kinds).
        bytes: its size on disk (see the report's ``method``).
        used_bytes: what its rows and indexes hold; the rest of ``bytes`` is free space
            that new rows reuse (PostgreSQL after DELETE and VACUUM; DuckDB: equal).
    """

    name: str
    kind: str
    rows: int
    points: int
    bytes: int
    used_bytes: int


@dataclass(frozen=True, slots=True)
class StorageTotals:
    """The history as a whole.

    Attributes:
        storage_bytes: what it takes on disk: the DuckDB file plus its WAL; the
            PostgreSQL schema's tables with their TOAST and indexes.
        used_bytes: what the disk budget counts: DuckDB's used blocks plus WAL (free
            blocks inside the file are reused, not returned); PostgreSQL's live rows
            and indexes (estimated from a sample of pages on large tables).
        database_bytes: the whole database (the DuckDB file; PostgreSQL's
            ``pg_database_size``).
        free_disk_bytes: free space of the file system holding the DuckDB file (None for
            PostgreSQL: the server's disk is not visible to a client).
        wal_bytes: DuckDB's write-ahead log (None for PostgreSQL).
        points: raw points.
        rollup_rows: rows of every rollup table.
    """

    storage_bytes: int
    used_bytes: int
    database_bytes: int
    free_disk_bytes: int | None
    wal_bytes: int | None
    points: int
    rollup_rows: int


@dataclass(frozen=True, slots=True)
class StorageReport:
    """What the history holds and takes, per tag and per table.

    Attributes:
        backend: ``duckdb`` or ``postgres`` (with its layout, e.g. ``postgres/blocks``).
        method: how bytes are attributed to tags, in a sentence.
        tags: per tag with points or rollup rows, sorted by path.
        tables: per table, largest first.
        totals: the whole history.
        retention: the policy as written and the pass counters (see
            :func:`retention_summary`).
        measured_ns: when it was measured (UTC ns).
    """

    backend: str
    method: str
    tags: tuple[TagUsage, ...]
    tables: tuple[TableUsage, ...]
    totals: StorageTotals
    retention: Mapping[str, Any] = field(default_factory=dict)
    measured_ns: int = 0


@dataclass(slots=True)
class GroupUsage:
    """One group's share: the sum of its tags'."""

    key: str
    tags: int = 0
    points: int = 0
    bytes: int = 0
    rollup_rows: int = 0
    rollup_bytes: int = 0
    oldest_ns: int | None = None
    newest_ns: int | None = None

    def add(self, tag: TagUsage) -> None:
        """Count one tag in."""
        self.tags += 1
        self.points += tag.points
        self.bytes += tag.bytes
        self.rollup_rows += tag.rollup_rows
        self.rollup_bytes += tag.rollup_bytes
        if tag.oldest_ns is not None:
            self.oldest_ns = (
                tag.oldest_ns if self.oldest_ns is None else min(self.oldest_ns, tag.oldest_ns)
            )
        if tag.newest_ns is not None:
            self.newest_ns = (
                tag.newest_ns if self.newest_ns is None else max(self.newest_ns, tag.newest_ns)
            )


@runtime_checkable
class StorageReporter(Protocol):
    """A historian that can report its disk use and apply retention on demand."""

    async def storage_report(self) -> StorageReport:
        """Measure the history now (a scan of the raw tables' tag and time columns)."""

    async def apply_retention(self) -> RetentionReport:
        """Apply retention and the disk budget now."""


def group_key(path: str, group: Group) -> str:
    """The key of ``path`` in ``group`` (see the module docstring)."""
    if group == "tag":
        return path
    asset = path.rsplit("/", 1)[0] if "/" in path else ""
    if not asset:
        return NO_ASSET
    if group == "equipment":
        return asset
    return "/".join(asset.split("/")[:_AREA_DEPTH])


def _under(path: str, prefix: str | None) -> bool:
    return prefix is None or path == prefix or path.startswith(prefix + "/")


def group_usage(
    tags: Sequence[TagUsage], group: Group, *, prefix: str | None = None
) -> list[GroupUsage]:
    """Tags under ``prefix`` (whole segments; None: all) summed per group, largest first.

    Ties (same bytes) are ordered by key, so the order is stable.
    """
    groups: dict[str, GroupUsage] = {}
    for tag in tags:
        if not _under(tag.path, prefix):
            continue
        key = group_key(tag.path, group)
        usage = groups.get(key)
        if usage is None:
            usage = groups[key] = GroupUsage(key)
        usage.add(tag)
    return sorted(groups.values(), key=lambda g: (-(g.bytes + g.rollup_bytes), g.key))


def share_out(total: int, weights: Sequence[int]) -> list[int]:
    """``total`` split in proportion to ``weights``, in whole bytes that sum to ``total``.

    Largest remainders get the leftover bytes, so no group's figure drifts by rounding.
    """
    whole = sum(weights)
    if whole <= 0 or total <= 0:
        return [0] * len(weights)
    exact = [total * w / whole for w in weights]
    out = [int(x) for x in exact]
    left = total - sum(out)
    for i in sorted(range(len(exact)), key=lambda i: out[i] - exact[i])[:left]:
        out[i] += 1
    return out


def retention_summary(
    policy: RetentionPolicy | None, counters: RetentionCounters | None
) -> dict[str, Any]:
    """The policy as written and the counters since start, for the report."""
    out: dict[str, Any] = {"active": bool(policy and policy.active)}
    if policy is not None:
        out.update(policy.describe())
        out["disk_budget_bytes"] = policy.disk_budget_bytes
    if counters is not None:
        out.update(
            passes=counters.passes,
            failures=counters.failures,
            deleted_points=counters.deleted_points,
            deleted_rollup_rows=counters.deleted_rollup_rows,
            budget_evictions=counters.budget_evictions,
            evicted_points=counters.evicted_points,
            over_budget=counters.over_budget,
            last_pass_ns=counters.last_pass_ns,
        )
    return out
