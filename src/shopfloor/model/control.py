"""What edge and server share about writes to equipment: the value and the tag written.

The server decides *whether* a write may happen (enabled per connector, confirmed,
audited); the edge side knows *how* (the tag's configuration, the connector). They meet
only through these value types and :class:`~shopfloor.errors.PayloadError` /
:class:`~shopfloor.errors.WriteRefused`, so neither imports the other.
"""

from __future__ import annotations

from dataclasses import dataclass

WriteValue = bool | int | float | str
"""A value as an operator gives it: engineering units, a state label, a flag or text."""


@dataclass(frozen=True, slots=True)
class WritableTag:
    """A tag of a connector that can write, as the platform shows it before a write.

    Attributes:
        path: the tag's ISA-95 path.
        connector: the name of the connector that reads and writes it.
        writable: the tag is configured ``writable = true`` (only those are ever written).
        data_type: the wire type on the device (``float32``, ``uint16``, ``bool`` …).
        unit: engineering unit.
        eng_low: lowest value accepted, when the tag has an engineering range.
        eng_high: highest value accepted, when the tag has an engineering range.
        states: for enumerated tags, the label of each number (a write may give either).
    """

    path: str
    connector: str
    writable: bool
    data_type: str
    unit: str = ""
    eng_low: float | None = None
    eng_high: float | None = None
    states: tuple[tuple[int, str], ...] = ()
