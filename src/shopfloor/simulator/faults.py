"""Faults a test or a demo can inject into a simulated machine.

Build one with a constructor and hand it to :meth:`Plant.inject
<shopfloor.simulator.Plant.inject>`::

    plant.inject("cnc-02", Fault.breakdown(DownReason.ELECTRICAL_FAULT, duration_ns=HOUR_NS))
    plant.inject("imm-01", Fault.overheat(15.0, at_ns=t, duration_ns=2 * HOUR_NS))
    plant.inject("cnc-01", Fault.bearing_wear(50.0))        # trips on vibration soon
    plant.inject("comp-01", Fault.sensor_failure("pressure", duration_ns=10 * MINUTE_NS))

A fault takes effect at ``at_ns`` (default: the plant's next sample) and changes only
the future; the machine's own random stops carry on around it.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from shopfloor.simulator.profiles import DownReason

MINUTE_NS = 60 * 1_000_000_000
HOUR_NS = 60 * MINUTE_NS


class FaultKind(StrEnum):
    """What a fault does."""

    BREAKDOWN = "breakdown"
    """DOWN with ``reason`` for ``duration_ns``, then running again."""
    BEARING_WEAR = "bearing-wear"
    """Vibration grows ``severity`` times faster until the machine trips and is repaired."""
    OVERHEAT = "overheat"
    """Cooling fails: temperature targets rise ``severity`` K for ``duration_ns``."""
    SENSOR_FAILURE = "sensor-failure"
    """Tag ``tag`` reads NaN with quality BAD_SENSOR_FAILURE for ``duration_ns``."""


@dataclass(frozen=True, slots=True)
class Fault:
    """A fault to inject; prefer the constructors, which name their parameters.

    Attributes:
        kind: what the fault does.
        at_ns: when it starts (UTC ns); None for the plant's next sample.
        duration_ns: how long it lasts (not used by bearing wear, which lasts until repair).
        reason: the ``down_reason`` of a breakdown.
        severity: speed-up factor of bearing wear, or K of overheating.
        tag: the tag name (last path segment) of a sensor failure.
    """

    kind: FaultKind
    at_ns: int | None = None
    duration_ns: int = 30 * MINUTE_NS
    reason: DownReason = DownReason.ELECTRICAL_FAULT
    severity: float = 1.0
    tag: str = ""

    def __post_init__(self) -> None:
        if self.duration_ns <= 0:
            raise ValueError(f"duration_ns must be positive, not {self.duration_ns}")
        if self.kind is FaultKind.BEARING_WEAR and not self.severity >= 1:
            raise ValueError(f"bearing wear severity is a speed-up >= 1, not {self.severity}")
        if self.kind is FaultKind.BREAKDOWN and self.reason is DownReason.NONE:
            raise ValueError("a breakdown needs a reason")
        if self.kind is FaultKind.SENSOR_FAILURE and not self.tag:
            raise ValueError("a sensor failure needs the tag name")

    @classmethod
    def breakdown(
        cls,
        reason: DownReason = DownReason.ELECTRICAL_FAULT,
        *,
        duration_ns: int = 30 * MINUTE_NS,
        at_ns: int | None = None,
    ) -> Fault:
        """The machine goes DOWN with ``reason`` for ``duration_ns``."""
        return cls(FaultKind.BREAKDOWN, at_ns=at_ns, duration_ns=duration_ns, reason=reason)

    @classmethod
    def bearing_wear(cls, factor: float = 20.0, *, at_ns: int | None = None) -> Fault:
        """Vibration degrades ``factor`` times faster until the trip and repair."""
        return cls(FaultKind.BEARING_WEAR, at_ns=at_ns, severity=factor)

    @classmethod
    def overheat(
        cls, kelvin: float = 15.0, *, duration_ns: int = HOUR_NS, at_ns: int | None = None
    ) -> Fault:
        """Temperatures head ``kelvin`` higher than normal for ``duration_ns`` (more scrap)."""
        return cls(FaultKind.OVERHEAT, at_ns=at_ns, duration_ns=duration_ns, severity=kelvin)

    @classmethod
    def sensor_failure(
        cls, tag: str, *, duration_ns: int = 10 * MINUTE_NS, at_ns: int | None = None
    ) -> Fault:
        """Tag ``tag`` of the machine reads NaN with Bad quality for ``duration_ns``."""
        return cls(FaultKind.SENSOR_FAILURE, at_ns=at_ns, duration_ns=duration_ns, tag=tag)
