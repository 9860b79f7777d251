"""Coalescing of repeated refusals, so a flood of them cannot flood the audit log.

Every refused request (a 403) is audited as ``access.denied``; an anonymous refusal of
an audited write (a 401) under the write's action; a login refused for too many attempts
(a 429) as ``auth.login`` or ``auth.lockout``. A script retrying a forbidden call in a
loop, a scanner walking another area's tags, or anyone on the network spraying passwords
or writes without a credential would otherwise add a durable, fsynced row per request.
The first refusal of a *key* (what was refused, who, from where, which method and route)
is written at once with everything it names; further refusals of the same key within
``window_s`` are only counted (with a few of the objects they named), and written as one
summary entry, ``detail.repeats`` = how many, once the window has passed (at the next
refusal of any key) or when the log closes. So each key writes at most two rows per
window, and the count of refused requests is never lost.

The keys are bounded (``max_keys``): when full, the oldest window is summarised early.
Pure and synchronous: :class:`~.audit.AuditLog` calls it on its event loop and writes
what it returns.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["DenialCoalescer", "DenialKey", "Summary"]

DenialKey = tuple[str, ...]
"""What makes two refusals the same: for a 403, who (principal and token or edge), the
client address, the method and the route."""

_MAX_TARGETS = 10
"""The most distinct objects a summary names (the count covers all of them)."""


@dataclass(slots=True)
class Summary:
    """The refusals of one key that were counted, not written, in one window.

    Attributes:
        action: the audit action they are entered under (``access.denied``, ...).
        user: who was refused.
        client: from which address.
        target: the first object the counted denials named ("" when none did).
        detail: method, route, ``repeats``, the first and last time (UTC ns), the objects.
    """

    action: str
    user: str
    client: str
    target: str
    detail: dict[str, Any]


@dataclass(slots=True)
class _Window:
    opened_s: float
    action: str
    user: str
    client: str
    base: dict[str, Any]
    repeats: int = 0
    first_ns: int = 0
    last_ns: int = 0
    targets: list[str] = field(default_factory=list)

    def summary(self) -> Summary:
        detail = {
            **self.base,
            "repeats": self.repeats,
            "first_ns": self.first_ns,
            "last_ns": self.last_ns,
            "targets": list(self.targets),
        }
        return Summary(
            self.action, self.user, self.client, self.targets[0] if self.targets else "", detail
        )


class DenialCoalescer:
    """Decides which refusals are written now and which are counted into a summary.

    Args:
        window_s: how long identical refusals are counted after the one written (0: every
            refusal is written).
        max_keys: the most keys remembered at once.
        monotonic: seconds of a monotonic clock (tests move it).
    """

    def __init__(
        self,
        window_s: float = 10.0,
        *,
        max_keys: int = 1024,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.window_s = window_s
        self.max_keys = max_keys
        self._monotonic = monotonic
        self._windows: OrderedDict[DenialKey, _Window] = OrderedDict()

    def admit(
        self,
        key: DenialKey,
        *,
        action: str,
        user: str,
        client: str,
        target: str,
        ts_ns: int,
        base: dict[str, Any],
    ) -> tuple[bool, list[Summary]]:
        """Take one refusal.

        Args:
            key: what makes two refusals "the same" (it includes ``action``).
            action: what a summary of this key is entered as.
            user, client, target: who, from where, the object named (for the summary).
            ts_ns: when (UTC ns).
            base: the detail every summary of this key repeats (method, route).

        Returns:
            Whether to write this denial now, and the summaries of windows that have
            ended (or were pushed out), to write first.
        """
        now = self._monotonic()
        due: list[Summary] = []
        # windows open in insertion order, so the lapsed ones are at the front
        while self._windows:
            first = next(iter(self._windows.values()))
            if now - first.opened_s < self.window_s:
                break
            self._pop_oldest(due)
        if key not in self._windows and len(self._windows) >= self.max_keys:
            self._pop_oldest(due)
        window = self._windows.get(key)
        if window is not None:
            window.repeats += 1
            window.first_ns = window.first_ns or ts_ns
            window.last_ns = ts_ns
            if target and target not in window.targets and len(window.targets) < _MAX_TARGETS:
                window.targets.append(target)
            return False, due
        if self.window_s > 0:
            self._windows[key] = _Window(now, action, user, client, dict(base))
        return True, due

    def _pop_oldest(self, due: list[Summary]) -> None:
        _, window = self._windows.popitem(last=False)
        if window.repeats:
            due.append(window.summary())

    def drain(self) -> list[Summary]:
        """Every pending summary (at close), forgetting all windows."""
        due = [w.summary() for w in self._windows.values() if w.repeats]
        self._windows.clear()
        return due
