"""From configured tags to what the platform and the sampler need to know of them."""

from __future__ import annotations

from dataclasses import dataclass

from shopfloor.config.connectors.base import ConnectorConfigBase, TagConfig
from shopfloor.model import DataType, TagMeta

_DATA_TYPES = {
    "bool": DataType.BOOL,
    "string": DataType.STRING,
    "float32": DataType.FLOAT,
    "float64": DataType.FLOAT,
}


@dataclass(frozen=True, slots=True)
class TagSpec:
    """How the sampler treats one tag: scaling and report-by-exception."""

    path: str
    scale: float = 1.0
    offset: float = 0.0
    deadband: float = 0.0
    max_silence_ns: int = 0


def tag_meta(tag: TagConfig, *, asset: str) -> TagMeta:
    """The platform's view of a configured tag."""
    if tag.states:
        data_type = DataType.INT
    elif tag.scale != 1.0 or tag.offset != 0.0:
        data_type = DataType.FLOAT  # a scaled integer register is a measurement
    else:
        data_type = _DATA_TYPES.get(tag.data_type, DataType.INT)
    if tag.bit is not None:
        data_type = DataType.BOOL
    states = tuple(sorted((int(k), v) for k, v in (tag.states or {}).items()))
    return TagMeta(
        path=tag.full_path(asset),
        unit=tag.unit,
        description=tag.description,
        data_type=data_type,
        eng_low=tag.eng_low,
        eng_high=tag.eng_high,
        states=states,
    )


def tag_spec(tag: TagConfig, connector: ConnectorConfigBase) -> TagSpec:
    """The sampler's view of a configured tag."""
    return TagSpec(
        path=tag.full_path(connector.asset),
        scale=tag.scale,
        offset=tag.offset,
        deadband=tag.deadband_abs(),
        max_silence_ns=round(connector.max_silence_s * 1e9),
    )
