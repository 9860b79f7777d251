"""The analytics file: stored OEE and energy slices and operator-assigned stop reasons.

One SQLite file in WAL mode with ``synchronous=FULL``, like the alarm journal: a reason
an operator assigned is on disk when the API answers. OEE slices are derived data (they
can always be computed again from the historian), stored so that a month of OEE for a
hundred machines is a ``SUM ... GROUP BY`` over a few tens of thousands of rows instead
of a pass over millions of points. Which hours are stored is kept apart (``oee_hours``),
so a missing hour (never computed, or invalidated by a reason change) is computed again
by the job, and on demand by a query meanwhile.

Blocking: call it from one thread (:class:`~.service.Analytics` owns one), never from
the event loop.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from pathlib import Path

from shopfloor.runtime.durable_sqlite import open_durable
from shopfloor.server.analytics.energy import ENERGY_COMPONENTS, EnergySlices
from shopfloor.server.analytics.oee import COMPONENTS, HOUR_NS, Slices
from shopfloor.server.analytics.store_base import (
    GROUP_KEYS,
    KINDS,
    AnalyticsStoreError,
    GroupSums,
    ReasonAssignment,
    slice_rows,
)

__all__ = ["AnalyticsStore", "AnalyticsStoreError", "GroupSums", "ReasonAssignment"]

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS oee_slices ("
    " equipment TEXT NOT NULL, start_ns INTEGER NOT NULL, end_ns INTEGER NOT NULL,"
    " hour_ns INTEGER NOT NULL, shift TEXT NOT NULL, shift_start_ns INTEGER NOT NULL,"
    " day TEXT NOT NULL, "
    + ", ".join(f"{c} REAL NOT NULL" for c in COMPONENTS)
    + ", PRIMARY KEY (equipment, start_ns)) WITHOUT ROWID",
    "CREATE TABLE IF NOT EXISTS oee_hours ("
    " equipment TEXT NOT NULL, hour_ns INTEGER NOT NULL, computed_ns INTEGER NOT NULL,"
    " PRIMARY KEY (equipment, hour_ns)) WITHOUT ROWID",
    "CREATE TABLE IF NOT EXISTS energy_slices ("
    " equipment TEXT NOT NULL, start_ns INTEGER NOT NULL, end_ns INTEGER NOT NULL,"
    " hour_ns INTEGER NOT NULL, shift TEXT NOT NULL, shift_start_ns INTEGER NOT NULL,"
    " day TEXT NOT NULL, "
    + ", ".join(f"{c} REAL NOT NULL" for c in ENERGY_COMPONENTS)
    + ", PRIMARY KEY (equipment, start_ns)) WITHOUT ROWID",
    "CREATE TABLE IF NOT EXISTS energy_hours ("
    " equipment TEXT NOT NULL, hour_ns INTEGER NOT NULL, computed_ns INTEGER NOT NULL,"
    " PRIMARY KEY (equipment, hour_ns)) WITHOUT ROWID",
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS stop_reasons ("
    " equipment TEXT NOT NULL, start_ns INTEGER NOT NULL, reason INTEGER NOT NULL,"
    " user TEXT NOT NULL, comment TEXT NOT NULL, assigned_ns INTEGER NOT NULL,"
    " PRIMARY KEY (equipment, start_ns)) WITHOUT ROWID",
    "CREATE TABLE IF NOT EXISTS stop_reason_log ("
    " seq INTEGER PRIMARY KEY AUTOINCREMENT, equipment TEXT NOT NULL,"
    " start_ns INTEGER NOT NULL, reason INTEGER NOT NULL, previous INTEGER,"
    " user TEXT NOT NULL, comment TEXT NOT NULL, assigned_ns INTEGER NOT NULL)",
    "CREATE TABLE IF NOT EXISTS epochs (equipment TEXT PRIMARY KEY, epoch INTEGER NOT NULL)"
    " WITHOUT ROWID",
)


class AnalyticsStore:
    """The file at ``path`` (created with its folder if missing): an
    :class:`~.store_base.AnalyticsStorage`."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self._con = open_durable(path, _SCHEMA)
        except (OSError, sqlite3.Error) as err:
            raise AnalyticsStoreError(f"analytics store {path}: {err}") from err

    def close(self) -> None:
        """Close the file."""
        self._con.close()

    def _write(
        self,
        statements: Iterable[tuple[str, Sequence[Sequence[object]]]],
        *,
        unless_moved: tuple[str, int] | None = None,
    ) -> bool:
        """Run ``statements`` in one transaction; with ``unless_moved`` (machine, epoch),
        only if the machine's epoch is still that (whether they ran)."""
        try:
            self._con.execute("BEGIN IMMEDIATE")
            try:
                if unless_moved is not None and self._epoch(unless_moved[0]) != unless_moved[1]:
                    self._con.execute("ROLLBACK")
                    return False
                for sql, rows in statements:
                    self._con.executemany(sql, rows)
                self._con.execute("COMMIT")
            except BaseException:
                self._con.execute("ROLLBACK")
                raise
        except sqlite3.Error as err:
            raise AnalyticsStoreError(f"analytics store {self.path}: cannot write: {err}") from err
        return True

    def _epoch(self, equipment: str) -> int:
        row = self._con.execute(
            "SELECT epoch FROM epochs WHERE equipment = ?", (equipment,)
        ).fetchone()
        return 0 if row is None else int(row[0])

    def epoch(self, equipment: str) -> int:
        """How many times the machine's stored hours were forgotten (read it before
        computing hours, give it to :meth:`put_hours`)."""
        try:
            return self._epoch(equipment)
        except sqlite3.Error as err:
            raise AnalyticsStoreError(f"analytics store {self.path}: {err}") from err

    # ------------------------------------------------------------------ OEE
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
        """Store the slices of whole hours (replacing those hours), in one transaction.

        Args:
            equipment: the machine's path.
            slices: slices covering whole UTC hours.
            shift_names: the calendar's shift names (``slices.shift`` indexes them).
            days: per slice, its local date.
            computed_ns: when they were computed.
            kind: ``oee`` or ``energy``.
            epoch: :meth:`epoch` before the slices were computed: if the machine's hours
                were forgotten since (a reason, late points), they are not stored.

        Returns:
            Whether they were stored.
        """
        table, hours_table, components, _ = KINDS[kind]
        hours, rows = slice_rows(equipment, slices, components, shift_names=shift_names, days=days)
        if not hours:
            return False
        marks = ",".join("?" * (7 + len(components)))
        return self._write(
            [
                (
                    f"DELETE FROM {table} WHERE equipment = ? AND hour_ns = ?",
                    [(equipment, h) for h in hours],
                ),
                (f"INSERT INTO {table} VALUES ({marks})", rows),
                (
                    f"INSERT OR REPLACE INTO {hours_table} VALUES (?, ?, ?)",
                    [(equipment, h, computed_ns) for h in hours],
                ),
            ],
            unless_moved=None if epoch is None else (equipment, epoch),
        )

    def count_hours(
        self, equipment: Sequence[str], start_ns: int, end_ns: int, *, kind: str = "oee"
    ) -> dict[str, int]:
        """Per machine, how many hours starting in ``[start_ns, end_ns)`` are stored."""
        hours_table = KINDS[kind][1]
        marks = ",".join("?" * len(equipment))
        try:
            rows = self._con.execute(
                f"SELECT equipment, count(*) FROM {hours_table} WHERE equipment IN ({marks})"
                " AND hour_ns >= ? AND hour_ns < ? GROUP BY equipment",
                (*equipment, start_ns, end_ns),
            ).fetchall()
        except sqlite3.Error as err:
            raise AnalyticsStoreError(f"analytics store {self.path}: {err}") from err
        return {e: 0 for e in equipment} | {str(e): int(n) for e, n in rows}

    def stored_hours(
        self, equipment: Sequence[str], start_ns: int, end_ns: int, *, kind: str = "oee"
    ) -> dict[str, set[int]]:
        """Per machine, the stored hours starting in ``[start_ns, end_ns)``."""
        hours_table = KINDS[kind][1]
        out: dict[str, set[int]] = {e: set() for e in equipment}
        marks = ",".join("?" * len(equipment))
        try:
            for eq, hour in self._con.execute(
                f"SELECT equipment, hour_ns FROM {hours_table} WHERE equipment IN ({marks})"
                " AND hour_ns >= ? AND hour_ns < ?",
                (*equipment, start_ns, end_ns),
            ):
                out[eq].add(hour)
        except sqlite3.Error as err:
            raise AnalyticsStoreError(f"analytics store {self.path}: {err}") from err
        return out

    def sum_hours(
        self, equipment: Sequence[str], start_ns: int, end_ns: int, group: str, *, kind: str = "oee"
    ) -> list[GroupSums]:
        """Summed components of the stored hours in ``[start_ns, end_ns)``, per group.

        Args:
            equipment: the machines' paths.
            start_ns: the first hour (a multiple of an hour).
            end_ns: the end of the last hour.
            group: ``hour``, ``shift``, ``day`` or ``none``.
            kind: ``oee`` or ``energy``.
        """
        table, _, components, _ = KINDS[kind]
        key = GROUP_KEYS[group]
        sums = ", ".join(f"sum({c})" for c in components)
        marks = ",".join("?" * len(equipment))
        try:
            rows = self._con.execute(
                f"SELECT {key}, min(start_ns), max(end_ns), {sums} FROM {table}"
                f" WHERE equipment IN ({marks}) AND hour_ns >= ? AND hour_ns < ?"
                f" GROUP BY {key}",
                (*equipment, start_ns, end_ns),
            ).fetchall()
        except sqlite3.Error as err:
            raise AnalyticsStoreError(f"analytics store {self.path}: {err}") from err
        width = len(key.split(","))
        return [
            GroupSums(
                key=tuple(r[:width]),
                start_ns=r[width],
                end_ns=r[width + 1],
                sums=dict(zip(components, r[width + 2 :], strict=True)),
            )
            for r in rows
        ]

    def invalidate(self, equipment: str, start_ns: int, end_ns: int) -> None:
        """Forget the stored hours (OEE and energy) overlapping ``[start_ns, end_ns)``:
        computed again. Energy hours go too: their split depends on the state. The
        machine's :meth:`epoch` moves, so hours being computed meanwhile are not stored."""
        first = start_ns // HOUR_NS * HOUR_NS
        self._write(
            [
                *(
                    (
                        f"DELETE FROM {table} WHERE equipment = ? AND hour_ns >= ? AND hour_ns < ?",
                        [(equipment, first, end_ns)],
                    )
                    for table in ("oee_hours", "oee_slices", "energy_hours", "energy_slices")
                ),
                (
                    "INSERT INTO epochs VALUES (?, 1)"
                    " ON CONFLICT (equipment) DO UPDATE SET epoch = epoch + 1",
                    [(equipment,)],
                ),
            ]
        )

    def settings_changed(self, fingerprint: str, *, kind: str = "oee") -> bool:
        """Whether the hours of ``kind`` were computed with other settings; if so they are
        all forgotten (the reasons stay) and ``fingerprint`` is kept for next time."""
        table, hours_table, _, key = KINDS[kind]
        try:
            row = self._con.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        except sqlite3.Error as err:
            raise AnalyticsStoreError(f"analytics store {self.path}: {err}") from err
        if row is not None and row[0] == fingerprint:
            return False
        self._write(
            [
                (f"DELETE FROM {hours_table}", [()]),
                (f"DELETE FROM {table}", [()]),
                ("INSERT OR REPLACE INTO meta VALUES (?, ?)", [(key, fingerprint)]),
            ]
        )
        return row is not None

    # -------------------------------------------------------------- reasons
    def assign_reason(
        self, equipment: str, start_ns: int, reason: int, *, user: str, comment: str, now_ns: int
    ) -> ReasonAssignment:
        """Store an operator's reason for the stop starting at ``start_ns``, and log it.

        This is the one place a reason is written: the audit log hooks in here.
        """
        previous = self.reasons(equipment, start_ns, start_ns + 1).get(start_ns)
        self._write(
            [
                (
                    "INSERT OR REPLACE INTO stop_reasons VALUES (?, ?, ?, ?, ?, ?)",
                    [(equipment, start_ns, reason, user, comment, now_ns)],
                ),
                (
                    "INSERT INTO stop_reason_log (equipment, start_ns, reason, previous, user,"
                    " comment, assigned_ns) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    [(equipment, start_ns, reason, previous, user, comment, now_ns)],
                ),
            ]
        )
        return ReasonAssignment(equipment, start_ns, reason, previous, user, comment, now_ns)

    def reasons(self, equipment: str, start_ns: int, end_ns: int) -> dict[int, int]:
        """Operator reasons of one machine's stops starting in ``[start_ns, end_ns)``."""
        try:
            rows = self._con.execute(
                "SELECT start_ns, reason FROM stop_reasons WHERE equipment = ?"
                " AND start_ns >= ? AND start_ns < ?",
                (equipment, start_ns, end_ns),
            ).fetchall()
        except sqlite3.Error as err:
            raise AnalyticsStoreError(f"analytics store {self.path}: {err}") from err
        return {int(s): int(r) for s, r in rows}

    def assignments(
        self, equipment: str, start_ns: int, end_ns: int
    ) -> dict[int, ReasonAssignment]:
        """Who assigned which reason to the stops starting in ``[start_ns, end_ns)``."""
        try:
            rows = self._con.execute(
                "SELECT r.start_ns, r.reason, r.user, r.comment, r.assigned_ns,"
                " (SELECT previous FROM stop_reason_log l WHERE l.equipment = r.equipment"
                "  AND l.start_ns = r.start_ns ORDER BY seq DESC LIMIT 1)"
                " FROM stop_reasons r WHERE equipment = ? AND start_ns >= ? AND start_ns < ?",
                (equipment, start_ns, end_ns),
            ).fetchall()
        except sqlite3.Error as err:
            raise AnalyticsStoreError(f"analytics store {self.path}: {err}") from err
        return {
            int(s): ReasonAssignment(equipment, int(s), int(r), p, u, c, int(t))
            for s, r, u, c, t, p in rows
        }
