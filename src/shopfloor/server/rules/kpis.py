"""Alarm system performance from the journal (ISA-18.2, EEMUA 191), as numpy over times.

What an alarm-management review asks of a period:

* **alarm rate**: annunciated alarms (activations) per 10 minutes, average and peak,
  and the share of 10-minute periods above the manageable 2 (ISA-18.2's target is about
  one per 10 minutes per operator; shopfloor does not know consoles yet, so the rate is
  for the whole plant or the alarms asked about);
* **floods**: 10-minute periods with more than 10 alarms, adjacent ones joined, and
  the share of the time spent in a flood;
* **bad actors**: the 10 alarms that came in most often, with their share of all;
* **chattering**: alarms that came in 3 or more times within 60 seconds, how often.

Periods are aligned to multiples of 10 minutes since the epoch (UTC).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from shopfloor.model.points import Int64Array

__all__ = ["AlarmKpis", "BadActor", "Chatter", "Flood", "alarm_kpis"]

PERIOD_NS = 600 * 10**9
FLOOD_ABOVE = 10
MANAGEABLE = 2
CHATTER_COUNT = 3
CHATTER_WINDOW_NS = 60 * 10**9


@dataclass(frozen=True, slots=True)
class Flood:
    """Adjacent 10-minute periods each with more than 10 alarms."""

    start_ns: int
    end_ns: int
    alarms: int


@dataclass(frozen=True, slots=True)
class BadActor:
    """An alarm among the most frequent."""

    alarm: str
    count: int
    share: float


@dataclass(frozen=True, slots=True)
class Chatter:
    """An alarm that came in ``CHATTER_COUNT`` times within a minute, ``episodes`` times."""

    alarm: str
    episodes: int
    activations: int


@dataclass(frozen=True, slots=True)
class AlarmKpis:
    """The figures of one period ``[start_ns, end_ns)``."""

    start_ns: int
    end_ns: int
    activations: int
    periods: int
    average_per_10min: float
    peak_per_10min: int
    share_over_manageable: float
    floods: list[Flood]
    share_in_flood: float
    bad_actors: list[BadActor]
    chattering: list[Chatter]


def alarm_kpis(
    alarm: list[str], ts: Int64Array, *, start_ns: int, end_ns: int, top: int = 10
) -> AlarmKpis:
    """The KPIs of the activations ``(alarm[i], ts[i])`` inside ``[start_ns, end_ns)``.

    Raises:
        ValueError: ``end_ns`` is not after ``start_ns``.
    """
    if end_ns <= start_ns:
        raise ValueError("end must be after start")
    ts = np.asarray(ts, np.int64)
    inside = (ts >= start_ns) & (ts < end_ns)
    names = np.array(alarm, dtype=object)[inside]
    ts = ts[inside]
    first = start_ns - start_ns % PERIOD_NS
    periods = -(-(end_ns - first) // PERIOD_NS)
    counts = np.bincount((ts - first) // PERIOD_NS, minlength=periods)[:periods]
    flooded = counts > FLOOD_ABOVE
    return AlarmKpis(
        start_ns=start_ns,
        end_ns=end_ns,
        activations=len(ts),
        periods=int(periods),
        average_per_10min=float(counts.mean()) if periods else 0.0,
        peak_per_10min=int(counts.max()) if periods else 0,
        share_over_manageable=float((counts > MANAGEABLE).mean()) if periods else 0.0,
        floods=_floods(flooded, counts, first),
        share_in_flood=float(flooded.mean()) if periods else 0.0,
        bad_actors=_bad_actors(names, top),
        chattering=_chattering(names, ts),
    )


def _floods(flooded: np.ndarray, counts: np.ndarray, first: int) -> list[Flood]:
    edges = np.diff(np.r_[0, flooded.astype(np.int8), 0])
    begins, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    return [
        Flood(first + int(b) * PERIOD_NS, first + int(e) * PERIOD_NS, int(counts[b:e].sum()))
        for b, e in zip(begins, ends, strict=True)
    ]


def _bad_actors(names: np.ndarray, top: int) -> list[BadActor]:
    if not len(names):
        return []
    unique, counts = np.unique(names.astype(str), return_counts=True)
    order = np.lexsort((unique, -counts))[:top]  # most first, then by name
    return [BadActor(str(unique[i]), int(counts[i]), float(counts[i] / len(names))) for i in order]


def _chattering(names: np.ndarray, ts: Int64Array) -> list[Chatter]:
    """Per alarm, the activations that are the third (or later) within a minute."""
    if not len(names):
        return []
    keys = names.astype(str)
    order = np.lexsort((ts, keys))
    keys, ts = keys[order], ts[order]
    back = CHATTER_COUNT - 1
    chatter = np.zeros(len(ts), np.bool_)
    same = keys[back:] == keys[:-back]
    chatter[back:] = same & (ts[back:] - ts[:-back] < CHATTER_WINDOW_NS)
    # an episode begins at a chattering activation whose predecessor did not chatter
    starts = chatter & ~np.r_[False, chatter[:-1] & (keys[1:] == keys[:-1])]
    out = []
    for key in np.unique(keys[chatter]):
        mine = keys == key
        out.append(Chatter(str(key), int(starts[mine].sum()), int(mine.sum())))
    return sorted(out, key=lambda c: (-c.episodes, c.alarm))
