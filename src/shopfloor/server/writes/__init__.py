"""Writes to equipment: off by default, enabled per connector by an admin, two steps
(ask, confirm), every attempt audited. See docs/writes.md."""

from shopfloor.server.writes.service import (
    CONFIRM_WITHIN_S,
    Confirmation,
    EquipmentWriter,
    WriteDenied,
    WriteDone,
    WriteService,
    reference,
)
from shopfloor.server.writes.switches import WRITES_FILE, WriteSwitches

__all__ = [
    "CONFIRM_WITHIN_S",
    "WRITES_FILE",
    "Confirmation",
    "EquipmentWriter",
    "WriteDenied",
    "WriteDone",
    "WriteService",
    "WriteSwitches",
    "reference",
]
