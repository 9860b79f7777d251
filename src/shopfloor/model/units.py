"""Engineering units shopfloor knows, so a typo in a template (``degc``, ``kw``) is caught.

The symbols are the ones plants write on screens (UCUM-like, ASCII): ``degC`` rather
than ``°C``. ``""`` is dimensionless (a state, a count without a unit).
"""

from __future__ import annotations

__all__ = ["KNOWN_UNITS", "is_known_unit"]

KNOWN_UNITS = frozenset(
    {
        "",
        # temperature
        "degC",
        "degF",
        "K",
        # pressure
        "bar",
        "mbar",
        "Pa",
        "kPa",
        "MPa",
        "psi",
        # electrical
        "V",
        "kV",
        "A",
        "mA",
        "W",
        "kW",
        "MW",
        "VA",
        "kVA",
        "var",
        "kvar",
        "Wh",
        "kWh",
        "MWh",
        "Hz",
        "ohm",
        "PF",
        # mechanical
        "rpm",
        "mm/s",
        "m/s",
        "m/s2",
        "g",
        "um",
        "mm",
        "m",
        "N",
        "kN",
        "Nm",
        "kg",
        "t",
        # flow and volume
        "m3",
        "m3/h",
        "m3/min",
        "Nm3",
        "Nm3/h",
        "L",
        "L/min",
        "L/h",
        "kg/h",
        "t/h",
        # time
        "ms",
        "s",
        "min",
        "h",
        "d",
        # counts and ratios
        "parts",
        "count",
        "%",
        "ppm",
        "pH",
        "%RH",
        # energy per unit
        "kWh/part",
        "kWh/t",
        "MJ",
    }
)


def is_known_unit(unit: str) -> bool:
    """Whether ``unit`` is one of :data:`KNOWN_UNITS` (case matters: ``kW`` not ``kw``)."""
    return unit in KNOWN_UNITS
