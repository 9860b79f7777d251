"""The platform's MQTT ingest settings (``[ingest.mqtt]``): edges that send through a broker.

Example::

    [ingest.mqtt]
    enabled = true
    host = "broker.plant.local"
    tls = { ca_file = "/etc/shopfloor/ca.pem" }
    username = "shopfloor-platform"
    password_env = "SHOPFLOOR_MQTT_PASSWORD"
    max_inflight = 16
"""

from __future__ import annotations

from pydantic import Field, field_validator

from shopfloor.config.durations import parse_duration_s
from shopfloor.config.mqtt_link import MqttLinkSettings

__all__ = ["MqttIngestSection"]


class MqttIngestSection(MqttLinkSettings):
    """The platform subscribes to every edge's batches, tags and status on this broker."""

    enabled: bool = Field(False, description="Take batches from edges through the broker.")
    max_inflight: int = Field(
        16,
        ge=1,
        le=1024,
        description="Messages the broker may hand the platform before it acknowledged them "
        "(MQTT 5 Receive Maximum): at most this many batches are decoded and committed at "
        "once. The acknowledgement (PUBACK) of a batch goes out only after its commit, so a "
        "platform that dies mid-batch gets it again from the broker.",
    )
    drain_timeout: str = Field(
        "10s",
        description="On shutdown, how long the batches being committed may take to finish "
        "and be answered; the rest stay in the broker for the next start.",
    )

    @field_validator("drain_timeout")
    @classmethod
    def _drain(cls, value: str) -> str:
        parse_duration_s(value)
        return value

    @property
    def drain_timeout_s(self) -> float:
        """``drain_timeout`` in seconds."""
        return parse_duration_s(self.drain_timeout)

    @property
    def mqtt_client_id(self) -> str:
        """The client id (names the persistent session)."""
        return self.client_id or "shopfloor-platform"
