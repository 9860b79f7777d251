"""MQTT connectors' configuration: the broker connection, and the JSON topic mapping.

:class:`MqttBrokerConfig` holds what every MQTT client needs (broker, TLS, credentials,
QoS, batching); the plain JSON connector (:class:`MqttConnectorConfig`, kind ``mqtt``)
and the Sparkplug B host (kind ``sparkplug``) both extend it.

Secrets never sit in the file: the password comes from an environment variable
(``password_env``) or a file (``password_file``, e.g. a container secret).
"""

from __future__ import annotations

import re
import ssl
from pathlib import Path
from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from shopfloor.config.connectors.base import ConnectorConfigBase, TagConfig
from shopfloor.config.durations import parse_duration_s
from shopfloor.config.secrets import read_secret
from shopfloor.errors import ConfigError

PLACEHOLDER = re.compile(r"\{(\d+)\}")
"""``{1}``, ``{2}`` … in a tag's name or path: the topic levels the wildcards matched."""


def check_topic_filter(value: str) -> str:
    """Return ``value`` if it is a valid MQTT topic filter, else raise ValueError."""
    if not value or len(value.encode()) > 65535 or "\x00" in value:
        raise ValueError("a topic filter must be 1 to 65535 bytes without NUL")
    levels = value.split("/")
    for i, level in enumerate(levels):
        if "#" in level and (level != "#" or i != len(levels) - 1):
            raise ValueError(f"'#' must be a whole level at the end of the filter: {value!r}")
        if "+" in level and level != "+":
            raise ValueError(f"'+' must be a whole level: {value!r}")
    return value


def check_pointer(value: str) -> str:
    """Return ``value`` if it is an RFC 6901 JSON pointer (``""`` or ``/a/0/b``)."""
    if value and not value.startswith("/"):
        raise ValueError(f"a JSON pointer is empty or starts with '/': {value!r}")
    if re.search(r"~[^01]|~$", value):
        raise ValueError(f"'~' in a JSON pointer must be written ~0 ('~') or ~1 ('/'): {value!r}")
    return value


class MqttTlsConfig(BaseModel):
    """TLS towards the broker. An empty table (``tls = {}``) means TLS with the system CAs."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    ca_file: Path | None = Field(
        None,
        description="PEM file of the CA that signed the broker's certificate; default: the "
        "system's trusted CAs.",
    )
    cert_file: Path | None = Field(
        None, description="Client certificate (PEM), for brokers that require one."
    )
    key_file: Path | None = Field(None, description="Private key of `cert_file` (PEM).")
    insecure: bool = Field(
        False,
        description="Accept any broker certificate and host name. For trials only: anyone on "
        "the path can read and forge the data.",
    )

    @model_validator(mode="after")
    def _pair(self) -> MqttTlsConfig:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file go together")
        return self


class MqttBrokerAccess(BaseModel):
    """How to reach and log in to an MQTT broker: shared by the MQTT and Sparkplug
    connectors and by the MQTT transport of store-and-forward."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    host: str = Field("127.0.0.1", description="Host name or address of the broker.")
    port: int | None = Field(
        None, ge=1, le=65535, description="TCP port of the broker; default 1883, or 8883 with TLS."
    )
    tls: MqttTlsConfig | None = Field(None, description="Use TLS (see the `tls` keys).")
    username: str | None = Field(None, description="User name, if the broker requires one.")
    password_env: str | None = Field(
        None, description="Name of the environment variable that holds the password."
    )
    password_file: Path | None = Field(
        None, description="File whose first line is the password (e.g. a container secret)."
    )
    keepalive: str = Field(
        "30s", description="MQTT keep-alive; a silent broker is declared lost after 1.5×."
    )

    @field_validator("keepalive")
    @classmethod
    def _keepalive(cls, value: str) -> str:
        parse_duration_s(value)
        return value

    @model_validator(mode="after")
    def _one_password_source(self) -> Self:
        if self.password_env is not None and self.password_file is not None:
            raise ValueError("give password_env or password_file, not both")
        if (self.password_env or self.password_file) and self.username is None:
            raise ValueError("a password needs a username")
        return self

    def _label(self) -> str:
        """Who is connecting, for error messages."""
        return "MQTT link"

    @property
    def broker_port(self) -> int:
        """The port to connect to."""
        if self.port is not None:
            return self.port
        return 8883 if self.tls is not None else 1883

    def password(self) -> str | None:
        """Read the password from its environment variable or file.

        Raises:
            ConfigError: the variable is unset or the file cannot be read.
        """
        return read_secret(env=self.password_env, file=self.password_file, what=self._label())

    def ssl_context(self) -> ssl.SSLContext | None:
        """The TLS context ``tls`` describes (None without TLS); reads files: call it off
        the event loop.

        Raises:
            ConfigError: a certificate or key file cannot be loaded.
        """
        tls = self.tls
        if tls is None:
            return None
        try:
            context = ssl.create_default_context(
                cafile=str(tls.ca_file) if tls.ca_file is not None else None
            )
            if tls.cert_file is not None and tls.key_file is not None:
                context.load_cert_chain(str(tls.cert_file), str(tls.key_file))
        except (OSError, ssl.SSLError) as err:
            raise ConfigError(f"{self._label()}: cannot load TLS files: {err}") from err
        if tls.insecure:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return context


class MqttBrokerConfig(ConnectorConfigBase, MqttBrokerAccess):
    """Connection to one MQTT broker (shared by the ``mqtt`` and ``sparkplug`` kinds)."""

    client_id: str = Field(
        "",
        max_length=128,
        description="MQTT client id; default `shopfloor-<name>`. Two clients with the same id "
        "keep disconnecting each other.",
    )
    qos: Literal[0, 1, 2] = Field(1, description="QoS of the subscriptions.")
    clean_session: bool = Field(
        True,
        description="Start without a stored session. `false` asks the broker to keep the "
        "subscriptions and queue QoS 1/2 messages while shopfloor is away (needs a fixed "
        "`client_id`).",
    )
    batch_window: str = Field(
        "50ms",
        description="Messages arriving within this window after the first one are handed on "
        "as one batch.",
    )
    batch_max: int = Field(
        1000, ge=1, le=100_000, description="Most messages in one batch (then it is sent early)."
    )
    queue_size: int = Field(
        10_000,
        ge=10,
        le=1_000_000,
        description="Most received messages waiting to be processed; beyond it the oldest are "
        "dropped (counted, logged once).",
    )
    max_payload: int = Field(
        1_048_576, ge=16, description="Largest payload decoded, in bytes; larger ones are Bad."
    )

    @field_validator("batch_window")
    @classmethod
    def _durations(cls, value: str) -> str:
        parse_duration_s(value)
        return value

    def _label(self) -> str:
        return f"connector {self.name}"

    @property
    def mqtt_client_id(self) -> str:
        """The client id to connect with."""
        return self.client_id or f"shopfloor-{self.name}"


class MqttTagConfig(TagConfig):
    """A value inside the JSON payload of the messages on a topic.

    ``{1}``, ``{2}`` … in ``name`` or ``path`` (or the connector's ``asset``) are replaced
    by the topic levels the filter's wildcards matched, in order (a ``#`` fills one
    placeholder with all the levels it matched), so one entry covers many machines.
    """

    topic: str = Field(
        description="Topic filter the value arrives on; `+` matches one level, `#` the rest."
    )
    pointer: str = Field(
        "",
        description="RFC 6901 JSON pointer to the value in the payload, e.g. `/temp` or "
        '`/axes/0/load`; "" is the whole payload.',
    )
    timestamp: str | None = Field(
        None,
        description="JSON pointer to the source timestamp; default: the time the message arrived.",
    )
    timestamp_format: Literal["auto", "iso8601", "s", "ms", "us", "ns"] = Field(
        "auto",
        description="How the timestamp is written. `auto`: a string is ISO 8601 (no zone "
        "means UTC); a number is epoch seconds below 1e11, milliseconds below 1e14, "
        "microseconds below 1e17, else nanoseconds.",
    )

    @field_validator("topic")
    @classmethod
    def _topic(cls, value: str) -> str:
        return check_topic_filter(value)

    @field_validator("pointer", "timestamp")
    @classmethod
    def _pointer(cls, value: str | None) -> str | None:
        return None if value is None else check_pointer(value)

    @model_validator(mode="after")
    def _no_address(self) -> MqttTagConfig:
        if self.address:
            raise ValueError("MQTT tags have no `address`: use `topic` and `pointer`")
        return self

    def wildcards(self) -> int:
        """How many wildcard levels the topic filter has."""
        return sum(1 for level in self.topic.split("/") if level in {"+", "#"})


class MqttConnectorConfig(MqttBrokerConfig):
    """Subscribes to plain MQTT topics and maps fields of their JSON payloads to tags."""

    kind: Literal["mqtt"] = Field("mqtt", description="Protocol: MQTT with JSON payloads.")
    tags: list[MqttTagConfig] = Field(
        default_factory=list, description="The values to collect (one entry per topic field)."
    )
    max_tags: int = Field(
        10_000,
        ge=1,
        description="Most distinct tag paths that wildcards may create; messages that would "
        "create more are dropped (logged once).",
    )

    @model_validator(mode="after")
    def _placeholders(self) -> MqttConnectorConfig:
        for i, tag in enumerate(self.tags):
            template = f"{self.asset}/{tag.path or tag.name}"
            used = [int(n) for n in PLACEHOLDER.findall(template)]
            if used and (min(used) < 1 or max(used) > tag.wildcards()):
                raise ValueError(
                    f"tags[{i}] ({tag.name}): placeholders {{1}}…{{{tag.wildcards()}}} exist "
                    f"for topic {tag.topic!r}, not {{{max(used)}}}"
                )
        return self
