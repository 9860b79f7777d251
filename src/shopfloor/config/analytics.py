"""The ``[analytics]`` section: analyses the server runs over stored history."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator

from shopfloor.config.alarms import repeated
from shopfloor.config.spc import SpcChartConfig

__all__ = ["AnalyticsSection"]


class AnalyticsSection(BaseModel):
    """Analytics over the historian's data."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    spc: list[SpcChartConfig] = Field(
        default_factory=list,
        description="`[[analytics.spc]]` tables: one control chart each (see the keys "
        "`analytics.spc.*`).",
    )

    @model_validator(mode="after")
    def _unique_names(self) -> AnalyticsSection:
        twice = repeated([chart.name for chart in self.spc])
        if twice:
            raise ValueError(f"two control charts are named {twice[0]!r}")
        return self
