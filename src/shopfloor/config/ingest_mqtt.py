"""The platform's MQTT ingest settings (``[ingest.mqtt]``): edges that send through a broker.

Example::

    [ingest.mqtt]
    enabled = true
    host = "broker.plant.local"
    tls = { ca_file = "/etc/shopfloor/ca.pem" }
    username = "shopfloor-platform"
    password_env = "SHOPFLOOR_MQTT_PASSWORD"
    max_inflight = 16

Several ``shopfloor ingest`` workers split the edges' batches between them through an
MQTT 5 shared subscription (``shared_group``; docs/scale-out.md)::

    [ingest.mqtt]
    enabled = true
    shared_group = "ingest"
    session_expiry = "0s"
"""

from __future__ import annotations

from pydantic import Field, field_validator

from shopfloor.config.durations import parse_duration_s
from shopfloor.config.mqtt_link import TOPIC_TAGS, MqttLinkSettings

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
    max_queued: int = Field(
        1000,
        ge=0,
        le=100_000,
        description="Messages the broker may hand over beyond `max_inflight` before they "
        "are processed; they wait in this process, unacknowledged. Mosquitto 2.0 keeps to "
        "Receive Maximum only until acknowledgements start flowing, then sends what it "
        "queued for this client (up to its own `max_queued_messages`, 1000 by default): "
        "keep this at least as large. Beyond it the consumer reconnects and the broker "
        "sends the unacknowledged messages again.",
    )
    shared_group: str = Field(
        "",
        max_length=64,
        description="Subscribe to the edges' batches and status reports as a member of "
        "this MQTT 5 shared subscription (`$share/<group>/...`), so that several "
        "`shopfloor ingest` workers split them; each worker needs its own client id. Empty: "
        "this process takes every batch. See docs/scale-out.md for the session settings.",
    )
    commands: bool = Field(
        False,
        description="Also send writes to equipment to the edges through this broker "
        "(`{topic_root}/cmd/...`; each edge still needs `allow_writes` and an admin's "
        "switch, see docs/writes.md).",
    )
    live_fanout: bool = Field(
        False,
        description="Scaled out (docs/scale-out.md): each `shopfloor ingest` worker publishes "
        "the batches it takes to `{topic_root}/live/<edge>` (QoS 0), and each `shopfloor "
        "server` with `enabled = false` subscribes to them, so that its websocket live "
        "values (and its OEE, energy and SPC jobs) see every worker's points.",
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

    @field_validator("shared_group")
    @classmethod
    def _group(cls, value: str) -> str:
        if set(value) & set("/+#\x00"):
            raise ValueError(
                f"shared_group must be one topic level without '/', '+' or '#', got {value!r}"
            )
        return value

    def subscription(self, kind: str) -> str:
        """The filter to subscribe to for ``kind``: shared when ``shared_group`` is set.

        Tag metadata is never shared: it is published retained, and a broker sends no
        retained messages to a shared subscription (MQTT 5 §4.8.2), so every worker
        subscribes to it itself (registering a tag twice is harmless).
        """
        plain = self.topic_filter(kind)
        if not self.shared_group or kind == TOPIC_TAGS:
            return plain
        return f"$share/{self.shared_group}/{plain}"

    @property
    def drain_timeout_s(self) -> float:
        """``drain_timeout`` in seconds."""
        return parse_duration_s(self.drain_timeout)

    @property
    def mqtt_client_id(self) -> str:
        """The client id (names the persistent session)."""
        return self.client_id or "shopfloor-platform"
