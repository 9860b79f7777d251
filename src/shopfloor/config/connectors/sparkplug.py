"""Sparkplug B host application: broker, host id, and how metrics become tag paths.

A metric's path is chosen in this order:

1. an entry in ``tags`` naming its group, edge node, device and metric (with the usual
   tag settings: path, unit, scaling, deadband …);
2. ``devices``: ``"group/node/device"`` (or ``"group/node"`` for node metrics) → an asset
   path; the metric name is appended;
3. ``path_template``, e.g. ``"{asset}/{group}/{node}/{device}/{metric}"``; empty parts
   (no device, no asset) are left out.

With ``sanitize`` (the default) names are made path-friendly: lower case, ``/`` in a
metric name separates levels, and runs of other characters become ``_``, so
``Motor/Speed (rpm)`` becomes ``motor/speed_rpm``.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator, model_validator

from shopfloor.config.connectors.base import TagConfig
from shopfloor.config.connectors.mqtt import MqttBrokerConfig
from shopfloor.config.durations import parse_duration_s
from shopfloor.model.tags import validate_path

_ID = re.compile(r"^[^/+#]+$")
_FIELDS = {"asset", "group", "node", "device", "metric"}
_TEMPLATE_FIELD = re.compile(r"\{([^{}]*)\}")


def _check_id(value: str, what: str) -> str:
    if not _ID.match(value):
        raise ValueError(f"{what} {value!r} must be non-empty without '/', '+' or '#'")
    return value


class SparkplugTagConfig(TagConfig):
    """One metric of one edge node (or device) with its own path and settings."""

    group: str = Field(description="Sparkplug group id.")
    node: str = Field(description="Edge node id.")
    device: str | None = Field(None, description="Device id; leave out for node metrics.")
    metric: str = Field(description="Metric name as in the birth certificate, e.g. `Motor/Speed`.")

    @field_validator("group", "node", "device")
    @classmethod
    def _ids(cls, value: str | None) -> str | None:
        return None if value is None else _check_id(value, "id")

    @model_validator(mode="after")
    def _no_address(self) -> SparkplugTagConfig:
        if self.address:
            raise ValueError("Sparkplug tags have no `address`: use group, node, device, metric")
        return self


class SparkplugConnectorConfig(MqttBrokerConfig):
    """A Sparkplug B host application: births, data, deaths, aliases, rebirths, STATE."""

    kind: Literal["sparkplug"] = Field("sparkplug", description="Protocol: Sparkplug B host.")
    host_id: str = Field(
        "",
        description="Host application id for the STATE topic `spBv1.0/STATE/<host_id>`; "
        "default: the connector's name.",
    )
    publish_state: bool = Field(
        True,
        description="Publish the retained STATE message (online, and offline as the will), "
        "as a primary host application does.",
    )
    groups: list[str] = Field(
        default_factory=list, description="Group ids to subscribe to; empty means all."
    )
    path_template: str = Field(
        "{asset}/{group}/{node}/{device}/{metric}",
        description="Path of a metric not in `tags` or `devices`; fields {asset}, {group}, "
        "{node}, {device}, {metric}.",
    )
    sanitize: bool = Field(
        True, description="Lower-case names and replace characters unfit for paths by `_`."
    )
    devices: dict[str, str] = Field(
        default_factory=dict,
        description='Asset path per device: {"group/node/device" = "acme/plant-1/…/press-1"}; '
        '"group/node" maps node metrics.',
    )
    tags: list[SparkplugTagConfig] = Field(
        default_factory=list, description="Metrics with their own path and settings."
    )
    only_configured: bool = Field(
        False, description="Ignore metrics that are not in `tags` or `devices`."
    )
    rebirth_timeout: str = Field(
        "10s",
        description="After a Rebirth request, wait this long for the birth before asking again.",
    )
    max_tags: int = Field(
        50_000, ge=1, description="Most distinct metric paths; further metrics are ignored."
    )
    max_nodes: int = Field(
        1_000, ge=1, description="Most edge nodes tracked; further nodes are ignored."
    )

    @field_validator("rebirth_timeout")
    @classmethod
    def _duration(cls, value: str) -> str:
        parse_duration_s(value)
        return value

    @field_validator("host_id")
    @classmethod
    def _host_id(cls, value: str) -> str:
        return _check_id(value, "host_id") if value else value

    @field_validator("groups")
    @classmethod
    def _groups(cls, value: list[str]) -> list[str]:
        return [_check_id(g, "group") for g in value]

    @field_validator("path_template")
    @classmethod
    def _template(cls, value: str) -> str:
        names = set(_TEMPLATE_FIELD.findall(value))
        unknown = names - _FIELDS
        if unknown:
            raise ValueError(f"unknown fields {sorted(unknown)}; use {sorted(_FIELDS)}")
        if "metric" not in names:
            raise ValueError("path_template must contain {metric}")
        return value

    @field_validator("devices")
    @classmethod
    def _devices(cls, value: dict[str, str]) -> dict[str, str]:
        for key, path in value.items():
            parts = key.split("/")
            if len(parts) not in (2, 3) or not all(_ID.match(p) for p in parts):
                raise ValueError(f"device key {key!r} must be 'group/node' or 'group/node/device'")
            validate_path(path)
        return value

    @model_validator(mode="after")
    def _default_host_id(self) -> SparkplugConnectorConfig:
        if not self.host_id and self.publish_state:
            _check_id(self.name, "host_id (default: the connector's name)")
        return self

    @property
    def state_host_id(self) -> str:
        """The host id used in the STATE topic."""
        return self.host_id or self.name

    @property
    def rebirth_timeout_s(self) -> float:
        """``rebirth_timeout`` in seconds."""
        return parse_duration_s(self.rebirth_timeout)
