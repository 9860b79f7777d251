"""The broker link of the MQTT transport, shared by the edge uplink and the platform ingest.

Store-and-forward over MQTT (docs/wire.md) has two clients on one broker: each edge
(``[uplink.mqtt]`` in the edge file) and the platform (``[ingest.mqtt]``). Both connect
the same way — host, port, TLS, credentials, a persistent MQTT 5 session — so both
extend :class:`MqttLinkSettings`. The TLS keys are the MQTT connectors' own
(:class:`~shopfloor.config.connectors.mqtt.MqttTlsConfig`).

The topic layout and the MQTT 5 user property names are the wire contract; they live here
because config is the one package both the edge and the server may import.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Final, Self

from pydantic import Field, field_validator

from shopfloor.config.connectors.mqtt import MqttBrokerAccess, MqttTlsConfig
from shopfloor.config.durations import parse_duration_s

__all__ = [
    "COMMANDS",
    "PROP_CONTENT_ENCODING",
    "PROP_EDGE",
    "PROP_EDGE_TIME",
    "PROP_HISTORICAL",
    "PROP_SEQ",
    "PROP_SEQS",
    "PROP_WIRE",
    "TOPIC_ACKS",
    "TOPIC_BATCHES",
    "TOPIC_RESULTS",
    "TOPIC_STATUS",
    "TOPIC_TAGS",
    "TOPIC_WRITABLES",
    "MqttLinkSettings",
    "MqttTlsConfig",
]

TOPIC_BATCHES: Final = "batches"
"""``{root}/edges/{edge}/batches``: edge → platform, one Arrow IPC batch per message."""
TOPIC_ACKS: Final = "acks"
"""``{root}/edges/{edge}/acks``: platform → edge, one JSON answer per batch or report."""
TOPIC_TAGS: Final = "tags"
"""``{root}/edges/{edge}/tags``: edge → platform, tag metadata (retained)."""
TOPIC_STATUS: Final = "status"
"""``{root}/edges/{edge}/status``: edge → platform, the status report."""
TOPIC_RESULTS: Final = "results"
"""``{root}/edges/{edge}/results``: edge → platform, the result of a command (JSON)."""
TOPIC_WRITABLES: Final = "writables"
"""``{root}/edges/{edge}/writables``: edge → platform, the connectors that allow writes and
their writable tags (JSON, retained): what the platform may send commands for."""
COMMANDS: Final = "cmd"
"""``{root}/cmd/{edge}/{verb}``: platform → edge commands (``read``, ``write``; JSON,
docs/writes.md). Under their own prefix so that a broker's ACL can let only the
platform publish there, and each edge only subscribe to its own."""

PROP_WIRE: Final = "wire"
"""User property: the wire version (``1``)."""
PROP_EDGE: Final = "edge"
"""User property: the edge id (the topic's and the body's must agree)."""
PROP_SEQ: Final = "seq"
"""User property: the batch sequence number (the first one of a coalesced message)."""
PROP_SEQS: Final = "seqs"
"""User property: all sequence numbers of a coalesced message, comma-separated."""
PROP_HISTORICAL: Final = "historical"
"""User property: ``1`` for a backlog batch, else ``0``."""
PROP_CONTENT_ENCODING: Final = "content-encoding"
"""User property: ``zstd`` or ``gzip`` over the whole payload; absent: not compressed."""
PROP_EDGE_TIME: Final = "edge-time"
"""User property: the edge's wall clock when it published, integer ns (skew estimate)."""

_LEVEL_FORBIDDEN = set("+#\x00")


class MqttLinkSettings(MqttBrokerAccess):
    """How a shopfloor process connects to the broker of the MQTT transport."""

    client_id: str = Field(
        "",
        max_length=128,
        description="MQTT client id; it names the persistent session, so it must stay the "
        "same across restarts and differ between processes. Default: "
        "`shopfloor-edge-<edge.id>` for an edge, `shopfloor-platform` for the platform.",
    )
    topic_root: str = Field(
        "shopfloor/v1",
        description="First topic levels of every message of the transport; edges and the "
        "platform must use the same.",
    )
    session_expiry: str = Field(
        "7d",
        description="How long the broker keeps this client's session (subscriptions and the "
        "QoS 1 messages queued for it) while it is away. Within the broker's own limits "
        "(Mosquitto: `max_queued_messages`, `persistent_client_expiration`).",
    )
    reconnect_max: str = Field(
        "10s", description="Longest wait between attempts to reach the broker."
    )

    @field_validator("session_expiry", "reconnect_max")
    @classmethod
    def _durations(cls, value: str) -> str:
        parse_duration_s(value)
        return value

    @field_validator("topic_root")
    @classmethod
    def _root(cls, value: str) -> str:
        levels = value.split("/")
        if not value or any(not level or set(level) & _LEVEL_FORBIDDEN for level in levels):
            raise ValueError(
                f"topic_root must be non-empty levels without '+', '#' or '/' at either end, "
                f"got {value!r}"
            )
        return value

    # ----------------------------------------------------------------- values
    @property
    def keepalive_s(self) -> int:
        """``keepalive`` in whole seconds (at least 1)."""
        return max(1, round(parse_duration_s(self.keepalive)))

    @property
    def session_expiry_s(self) -> int:
        """``session_expiry`` in whole seconds, capped at MQTT's largest (``2**32 - 1``)."""
        return min(2**32 - 1, max(0, round(parse_duration_s(self.session_expiry))))

    @property
    def reconnect_max_s(self) -> float:
        """``reconnect_max`` in seconds."""
        return parse_duration_s(self.reconnect_max)

    @property
    def where(self) -> str:
        """``host:port`` of the broker, for messages."""
        return f"{self.host}:{self.broker_port}"

    def topic(self, edge: str, kind: str) -> str:
        """The topic of ``kind`` (``batches``, ``acks``, ``tags``, ``status``) for ``edge``."""
        return f"{self.topic_root}/edges/{edge}/{kind}"

    def command_topic(self, edge: str, verb: str) -> str:
        """The topic of the platform's ``verb`` commands to ``edge`` (``+``: every verb)."""
        return f"{self.topic_root}/{COMMANDS}/{edge}/{verb}"

    def topic_filter(self, kind: str) -> str:
        """The filter matching ``kind`` of every edge (``{root}/edges/+/{kind}``)."""
        return f"{self.topic_root}/edges/+/{kind}"

    def parse_topic(self, topic: str) -> tuple[str, str] | None:
        """``(edge, kind)`` of a topic of this layout, None for any other topic."""
        prefix = f"{self.topic_root}/edges/"
        if not topic.startswith(prefix):
            return None
        rest = topic[len(prefix) :].split("/")
        if len(rest) != 2 or not rest[0]:
            return None
        return rest[0], rest[1]

    def relative_to(self, base: Path) -> Self:
        """A copy whose relative file settings (certificates, keys, password file) are
        made relative to ``base`` (the configuration file's folder)."""
        update: dict[str, Any] = {}
        if self.password_file is not None and not self.password_file.is_absolute():
            update["password_file"] = base / self.password_file
        if self.tls is not None:
            files = {
                name: base / value
                for name, value in self.tls
                if isinstance(value, Path) and not value.is_absolute()
            }
            if files:
                update["tls"] = self.tls.model_copy(update=files)
        return self.model_copy(update=update) if update else self
