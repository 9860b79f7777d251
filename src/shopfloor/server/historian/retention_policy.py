"""What retention says, as plain values: which tag keeps raw points how long, and the budget.

Pure: no storage, no clock. The backends' retention passes
(:mod:`~shopfloor.server.historian.retention`, :mod:`~shopfloor.server.historian.pg_retention`)
ask it for each tag's *cutoff*: the first UTC midnight whose day is kept. Everything
before it goes, whole days at a time (a day goes once all of it is older than the
retention), because whole days are what storage frees cleanly: DuckDB row groups of a
compacted day, PostgreSQL hour blocks, a daily partition.

Rules are tried in order and the first match wins, as in a firewall: put the narrow
classes first. A pattern with ``*``, ``?`` or ``[`` is a glob over the whole path (``**``
spans levels, ``*`` and ``?`` stay within one); without, it names a tag or an asset
folder (whole segments: ``acme/plant-1`` is not ``acme/plant-10``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from shopfloor.config.retention import check_pattern, is_glob

if TYPE_CHECKING:
    from shopfloor.config.retention import RetentionSection

__all__ = [
    "DAY_NS",
    "FOREVER",
    "PathRule",
    "RetentionPolicy",
    "cutoff_of",
    "expired_units",
    "floor_day",
    "group_by_cutoff",
    "policy_of",
]

DAY_NS = 86_400 * 10**9
"""The unit retention deletes: one UTC day."""

FOREVER = np.iinfo(np.int64).min
"""The cutoff of a tag kept forever: no day starts before it."""


def floor_day(ts_ns: int) -> int:
    """The UTC midnight at or before ``ts_ns`` (floored: before 1970 too)."""
    return ts_ns - ts_ns % DAY_NS


def cutoff_of(now_ns: int, keep_ns: int | None) -> int:
    """The first midnight kept when points are kept ``keep_ns``; :data:`FOREVER` for None."""
    if keep_ns is None:
        return int(FOREVER)
    return floor_day(now_ns - keep_ns)


def _glob_regex(pattern: str) -> re.Pattern[str]:
    """``**`` any characters, ``*`` within a segment, ``?`` one character, ``[..]`` a class."""
    out: list[str] = []
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if pattern.startswith("**", i):
            # "a/**" also takes the folder itself's tags ("a/x"), "**/b" any depth
            out.append(".*")
            i += 2
        elif c == "*":
            out.append("[^/]*")
            i += 1
        elif c == "?":
            out.append("[^/]")
            i += 1
        elif c == "[":
            end = pattern.index("]", i + 1)
            body = pattern[i + 1 : end]
            negate = body.startswith("!")
            # a class as fnmatch writes it: ranges stay ranges, only backslashes and a
            # leading caret (literal in a glob) are escaped
            inner = body[negate:].replace("\\", "\\\\")
            if inner.startswith("^"):
                inner = "\\" + inner
            out.append("[" + ("^" if negate else "") + inner + "]")
            i = end + 1
        else:
            out.append(re.escape(c))
            i += 1
    return re.compile("".join(out) + r"\Z")


@dataclass(frozen=True, slots=True)
class PathRule:
    """Raw retention for the paths ``pattern`` matches.

    Attributes:
        pattern: a glob or a path/asset prefix (see the module docstring).
        keep_ns: how long raw points are kept; None keeps them forever.
    """

    pattern: str
    keep_ns: int | None
    _regex: re.Pattern[str] | None = field(default=None, repr=False, compare=False)

    @classmethod
    def of(cls, pattern: str, keep_ns: int | None) -> PathRule:
        """A rule over ``pattern`` (checked: raises ValueError like the configuration)."""
        pattern = check_pattern(pattern)
        regex = _glob_regex(pattern) if is_glob(pattern) else None
        return cls(pattern, keep_ns, regex)

    def matches(self, path: str) -> bool:
        """Whether ``path`` is one of the rule's tags."""
        if self._regex is not None:
            return self._regex.match(path) is not None
        return path == self.pattern or path.startswith(self.pattern + "/")


@dataclass(frozen=True, slots=True)
class RetentionPolicy:
    """Retention and disk budget of one historian.

    Attributes:
        raw_ns: how long raw points of tags no rule matches are kept (None: forever).
        rules: per tag class, tried in order; the first match wins.
        rollup_1m_ns: how long rows of ``rollup_1m*`` tables are kept (None: forever).
        rollup_1h_ns: the same for ``rollup_1h*`` tables.
        disk_budget_bytes: most bytes the history may use (None: no budget).
        interval_s: how often the background pass runs.
        text: the settings as written, for reports (``raw``, ``disk_budget``, ...).
    """

    raw_ns: int | None = None
    rules: tuple[PathRule, ...] = ()
    rollup_1m_ns: int | None = None
    rollup_1h_ns: int | None = None
    disk_budget_bytes: int | None = None
    interval_s: float = 900.0
    text: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.interval_s <= 0:
            raise ValueError("interval_s must be > 0")
        if self.disk_budget_bytes is not None and self.disk_budget_bytes <= 0:
            raise ValueError("disk_budget_bytes must be > 0 (or None)")

    @property
    def active(self) -> bool:
        """Whether a pass can delete anything at all."""
        return (
            self.raw_ns is not None
            or any(r.keep_ns is not None for r in self.rules)
            or self.rollup_1m_ns is not None
            or self.rollup_1h_ns is not None
            or self.disk_budget_bytes is not None
        )

    def raw_keep_ns(self, path: str) -> int | None:
        """How long raw points of ``path`` are kept (None: forever)."""
        for rule in self.rules:
            if rule.matches(path):
                return rule.keep_ns
        return self.raw_ns

    def raw_cutoffs(self, ids: Mapping[str, int], now_ns: int) -> dict[int, int]:
        """Per tag id, the first midnight whose raw points are kept; tags kept forever left out."""
        out: dict[int, int] = {}
        for path, tag_id in ids.items():
            keep = self.raw_keep_ns(path)
            if keep is not None:
                out[int(tag_id)] = cutoff_of(now_ns, keep)
        return out

    def rollup_keep_ns(self, kind: str) -> int | None:
        """How long rows of rollup tables of ``kind`` (``rollup_1m``/``rollup_1h``) are kept."""
        return {"rollup_1m": self.rollup_1m_ns, "rollup_1h": self.rollup_1h_ns}.get(kind)

    def describe(self) -> dict[str, str]:
        """The settings as written, for reports."""
        return dict(self.text)


def _ns(seconds: float | None) -> int | None:
    return None if seconds is None else round(seconds * 1e9)


def policy_of(section: RetentionSection) -> RetentionPolicy:
    """The policy of a validated ``[historian.retention]`` section."""
    return RetentionPolicy(
        raw_ns=_ns(section.raw_s),
        rules=tuple(PathRule.of(rule.match, _ns(rule.raw_s)) for rule in section.rules),
        rollup_1m_ns=_ns(section.rollup_1m_s),
        rollup_1h_ns=_ns(section.rollup_1h_s),
        disk_budget_bytes=section.disk_budget_bytes,
        interval_s=section.interval_s,
        text={
            "raw": section.raw,
            "rollup_1m": section.rollup_1m,
            "rollup_1h": section.rollup_1h,
            "disk_budget": section.disk_budget,
            "interval": section.interval,
            "rules": "; ".join(f"{r.match} = {r.raw or 'forever'}" for r in section.rules),
        },
    )


def group_by_cutoff(cutoffs: Mapping[int, int]) -> dict[int, list[int]]:
    """Tag ids per cutoff (one delete per class, not per tag), ids ascending."""
    out: dict[int, list[int]] = {}
    for tag_id, cutoff in sorted(cutoffs.items()):
        out.setdefault(cutoff, []).append(tag_id)
    return out


def expired_units(
    units: Iterable[tuple[int, int]], cutoffs: Mapping[int, int]
) -> dict[int, list[int]]:
    """Of ``(day, tag_id)`` units, those before their tag's cutoff: tag ids per day, oldest
    first."""
    out: dict[int, list[int]] = {}
    for day, tag_id in units:
        cutoff = cutoffs.get(tag_id)
        if cutoff is not None and day + DAY_NS <= cutoff:
            out.setdefault(day, []).append(tag_id)
    return {day: sorted(out[day]) for day in sorted(out)}
