"""The retention pass's schedule, its report and its counters (both backends).

A backend supplies one coroutine that runs a pass (:data:`PassFn`); :class:`RetentionLoop`
runs it every ``interval_s`` (the first one interval after start, so a command that opens
the historian for a moment never deletes anything), one pass at a time, on demand too
(:meth:`RetentionLoop.apply`), logs a failure once and its recovery once, and keeps the
counters ``/healthz`` shows.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from shopfloor.errors import HistorianError
from shopfloor.server.historian.retention_policy import RetentionPolicy

__all__ = ["PassFn", "RetentionCounters", "RetentionLoop", "RetentionReport"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RetentionReport:
    """What one retention pass did.

    Attributes:
        raw_points: raw points deleted because their retention ran out.
        raw_units: whole units deleted for retention: ``(tag, day)`` ranges (DuckDB),
            hour-block rows (PostgreSQL blocks layout), daily partitions (version 1).
        rollup_rows: rows of rollup tables deleted because their retention ran out.
        evicted_raw_days: whole UTC days of raw points evicted for the disk budget.
        evicted_raw_points: the points those days held.
        evicted_rollup_days: whole days of one rollup table evicted for the budget.
        used_bytes: what the history used at the end of the pass (what the budget
            counts; None when there is no budget and nothing was measured).
        over_budget: still over the budget after the pass (only the current day is left).
        seconds: wall time of the pass.
    """

    raw_points: int = 0
    raw_units: int = 0
    rollup_rows: int = 0
    evicted_raw_days: int = 0
    evicted_raw_points: int = 0
    evicted_rollup_days: int = 0
    used_bytes: int | None = None
    over_budget: bool = False
    seconds: float = 0.0

    @property
    def evictions(self) -> int:
        """Days evicted for the budget, raw and rollup."""
        return self.evicted_raw_days + self.evicted_rollup_days


@dataclass(slots=True)
class RetentionCounters:
    """Totals since the historian started (``/healthz``, the disk report)."""

    passes: int = 0
    failures: int = 0
    deleted_points: int = 0
    deleted_rollup_rows: int = 0
    budget_evictions: int = 0
    evicted_points: int = 0
    used_bytes: int | None = None
    over_budget: bool = False
    last_pass_ns: int | None = None

    def add(self, report: RetentionReport, now_ns: int) -> None:
        """Count a finished pass."""
        self.passes += 1
        self.deleted_points += report.raw_points
        self.deleted_rollup_rows += report.rollup_rows
        self.budget_evictions += report.evictions
        self.evicted_points += report.evicted_raw_points
        if report.used_bytes is not None:
            self.used_bytes = report.used_bytes
        self.over_budget = report.over_budget
        self.last_pass_ns = now_ns


PassFn = Callable[[int], Awaitable[RetentionReport]]
"""Runs one pass at the given wall-clock time (UTC ns) and reports it."""


class RetentionLoop:
    """Runs a backend's retention pass every ``policy.interval_s`` and on demand.

    Args:
        policy: what to keep; a policy that deletes nothing makes :meth:`run` return.
        run_pass: the backend's pass.
        clock: the wall clock in UTC nanoseconds.
    """

    def __init__(
        self, policy: RetentionPolicy, run_pass: PassFn, *, clock: Callable[[], int]
    ) -> None:
        self.policy = policy
        self.counters = RetentionCounters()
        self._run_pass = run_pass
        self._clock = clock
        self._lock = asyncio.Lock()
        self._failing = False

    async def run(self) -> None:
        """Apply retention every interval until cancelled; a failure is logged, not fatal."""
        if not self.policy.active:
            return
        while True:
            await asyncio.sleep(self.policy.interval_s)
            try:
                await self.apply()
            except HistorianError as err:
                if not self._failing:
                    self._failing = True
                    logger.error("historian retention failed; trying again later: %s", err)
            except Exception:  # the periodic job's supervisor: a bug must not end it silently
                self.counters.failures += 1
                logger.exception("historian retention crashed; trying again later")
            else:
                if self._failing:
                    self._failing = False
                    logger.info("historian retention works again")

    async def apply(self) -> RetentionReport:
        """Run one pass now (after the one in progress, if any) and count it.

        Raises:
            HistorianError: the pass failed; what it deleted before stays deleted.
        """
        async with self._lock:
            now = self._clock()
            try:
                report = await self._run_pass(now)
            except HistorianError:
                self.counters.failures += 1
                raise
            was_over = self.counters.over_budget
            self.counters.add(report, now)
        _log(report, self.policy, was_over=was_over)
        return report


def _log(report: RetentionReport, policy: RetentionPolicy, *, was_over: bool) -> None:
    if report.raw_units or report.rollup_rows:
        logger.info(
            "historian retention: deleted %d raw points (%d units) and %d rollup rows in %.1f s",
            report.raw_points,
            report.raw_units,
            report.rollup_rows,
            report.seconds,
        )
    if report.evictions:
        logger.warning(
            "historian over its disk budget (%s): evicted the oldest %d day(s) of raw points "
            "(%d points) and %d day(s) of rollups; now %s used",
            policy.text.get("disk_budget", policy.disk_budget_bytes),
            report.evicted_raw_days,
            report.evicted_raw_points,
            report.evicted_rollup_days,
            _size(report.used_bytes),
        )
    if report.over_budget and not was_over:  # the transition only, not every pass
        logger.warning(
            "historian still over its disk budget (%s) with %s used: only the current day "
            "is left; raise disk_budget or shorten retention",
            policy.text.get("disk_budget", policy.disk_budget_bytes),
            _size(report.used_bytes),
        )
    elif was_over and not report.over_budget:
        logger.info("historian back under its disk budget: %s used", _size(report.used_bytes))


def _size(n: int | None) -> str:
    if n is None:
        return "unknown"
    return f"{n / 1e6:,.1f} MB"
