"""Publishing the plant to a Unified Namespace on MQTT (``[uns]``).

Example::

    [uns]
    enabled = true
    host = "broker.plant.local"
    topic_root = ""          # "" : topics are the tag paths themselves (acme/plant-1/...)
    qos = 0
    retain = true            # a new subscriber gets every tag's last value at once
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from shopfloor.config.connectors.mqtt import MqttBrokerAccess

__all__ = ["UnsSection"]


class UnsSection(MqttBrokerAccess):
    """Every value and alarm change as JSON under its ISA-95 path, for other systems."""

    enabled: bool = Field(False, description="Publish to the broker.")
    topic_root: str = Field(
        "",
        description="Levels before every path (`uns/v1`); empty: the paths are the topics.",
    )
    qos: Literal[0, 1] = Field(0, description="MQTT QoS of the messages.")
    retain: bool = Field(True, description="Retained: a new subscriber gets the last values.")
    client_id: str = Field("shopfloor-uns", max_length=128, description="MQTT client id.")

    @field_validator("topic_root")
    @classmethod
    def _root(cls, value: str) -> str:
        if value and (value.startswith("/") or value.endswith("/") or set(value) & set("+#")):
            raise ValueError(
                f"topic_root: levels without '+', '#' or a '/' at either end, got {value!r}"
            )
        return value

    def _label(self) -> str:
        return "uns"

    def topic(self, path: str) -> str:
        """The topic of a tag or alarm path."""
        return f"{self.topic_root}/{path}" if self.topic_root else path
