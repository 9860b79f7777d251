"""The simulated factory: a deterministic plant that produces plausible signals.

:class:`Plant` samples every machine of a :class:`PlantLayout` into one columnar
:class:`~shopfloor.model.PointBatch` per call, on explicit simulated time. Machines are
CNC mills, injection moulding presses, conveyors, air compressors and energy meters
(:class:`MachineKind`); their behaviour is in :mod:`shopfloor.simulator.profiles`.
:class:`Fault` and :meth:`Plant.inject` change a machine's future for tests and demos.
"""

from shopfloor.simulator.faults import Fault, FaultKind
from shopfloor.simulator.layout import (
    MachineSpec,
    PlantLayout,
    default_layout,
    load_layout,
    parse_layout,
)
from shopfloor.simulator.plant import Plant
from shopfloor.simulator.profiles import DownReason, MachineKind, State

__all__ = [
    "DownReason",
    "Fault",
    "FaultKind",
    "MachineKind",
    "MachineSpec",
    "Plant",
    "PlantLayout",
    "State",
    "default_layout",
    "load_layout",
    "parse_layout",
]
