"""The platform as a Sparkplug B edge node (``[sparkplug_node]``).

Example::

    [sparkplug_node]
    enabled = true
    host = "broker.plant.local"
    group_id = "acme"
    node_id = "plant-1"
    primary_host_id = "ignition"   # births wait for this host's STATE (Sparkplug 3.0)
"""

from __future__ import annotations

import re

from pydantic import Field, field_validator

from shopfloor.config.connectors.mqtt import MqttBrokerAccess

__all__ = ["SparkplugNodeSection"]

_ID = re.compile(r"^[^/+#]+$")


class SparkplugNodeSection(MqttBrokerAccess):
    """Every tag of the platform, one device per equipment, for Sparkplug host applications."""

    enabled: bool = Field(False, description="Publish as a Sparkplug B edge node.")
    group_id: str = Field("shopfloor", description="Sparkplug group id.")
    node_id: str = Field("platform", description="Sparkplug edge node id.")
    primary_host_id: str | None = Field(
        None,
        description="A primary host application (e.g. Ignition's) to wait for: births go out "
        "once its STATE says online, and again each time it comes online.",
    )

    @field_validator("group_id", "node_id", "primary_host_id")
    @classmethod
    def _sparkplug_id(cls, value: str | None) -> str | None:
        if value is not None and not _ID.match(value):
            raise ValueError(f"a Sparkplug id has no '/', '+' or '#', got {value!r}")
        return value

    def _label(self) -> str:
        return "sparkplug_node"
