"""The simulated factory as a connector: for the demo, trials and training."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from shopfloor.config.connectors.base import ConnectorConfigBase
from shopfloor.config.durations import parse_duration_s


class SimulatorConnectorConfig(ConnectorConfigBase):
    """Reads the seeded simulated plant (10 machines) in-process."""

    kind: Literal["simulator"] = Field("simulator", description="Protocol: the simulator.")
    seed: int = Field(1, description="Random seed; the same seed gives the same plant.")
    speed: float = Field(
        1.0, gt=0, le=10_000, description="Simulated seconds per wall second while behind."
    )
    backfill: str = Field("0s", description="How far in the past simulated time starts.")

    @field_validator("backfill")
    @classmethod
    def _backfill(cls, value: str) -> str:
        parse_duration_s(value)
        return value
