"""Tag metadata: what a value means, where it sits in the asset tree, how to show it."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class DataType(StrEnum):
    """How a tag's values are typed. Booleans travel as 0.0/1.0, strings in the text column."""

    FLOAT = "float"
    INT = "int"
    BOOL = "bool"
    STRING = "string"


@dataclass(frozen=True, slots=True)
class TagMeta:
    """Everything the platform knows about a tag besides its values.

    Attributes:
        path: ISA-95 path ``enterprise/site/area/line/cell/equipment/tag`` (fewer levels are
            allowed; the last segment is the tag's own name).
        unit: engineering unit, for example ``degC``, ``kW``, ``parts``.
        description: free text for people.
        data_type: how values are typed.
        eng_low: lower end of the engineering range, if known.
        eng_high: upper end of the engineering range, if known.
        states: for enumerated tags, the label of each integer value.
    """

    path: str
    unit: str = ""
    description: str = ""
    data_type: DataType = DataType.FLOAT
    eng_low: float | None = None
    eng_high: float | None = None
    states: tuple[tuple[int, str], ...] = ()

    @property
    def name(self) -> str:
        """The tag's own name: the last segment of its path."""
        return self.path.rsplit("/", 1)[-1]

    @property
    def asset(self) -> str:
        """The path of the asset the tag belongs to (everything before its name)."""
        return self.path.rsplit("/", 1)[0] if "/" in self.path else ""


def validate_path(path: str) -> str:
    """Return ``path`` if it is a well-formed tag path, else raise ValueError naming the fault."""
    if not path or len(path) > 512:
        raise ValueError("a tag path must be 1 to 512 characters")
    segments = path.split("/")
    if any(not s for s in segments):
        raise ValueError(f"tag path {path!r} has an empty segment")
    if any(s.strip() != s for s in segments):
        raise ValueError(f"tag path {path!r} has a segment with leading or trailing spaces")
    if any(c in path for c in "#+\x00"):
        raise ValueError(f"tag path {path!r} contains '#', '+' or NUL (reserved in MQTT topics)")
    return path
