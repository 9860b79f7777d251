"""Connector kinds by name, so a new protocol is one new module and one line here.

Modules are imported only when a configuration uses their kind, so a plant that only
speaks Modbus never loads the OPC UA stack.
"""

from __future__ import annotations

import importlib
from typing import Any

from shopfloor.config.connectors.base import ConnectorConfigBase
from shopfloor.edge.connectors.base import Connector
from shopfloor.errors import ConfigError

BUILTIN: dict[str, str] = {
    "simulator": "shopfloor.edge.connectors.sim:SimulatorConnector",
    "modbus": "shopfloor.edge.connectors.modbus:ModbusConnector",
    "s7": "shopfloor.edge.connectors.s7:S7Connector",
    "opcua": "shopfloor.edge.connectors.opcua:OpcUaConnector",
    "mqtt": "shopfloor.edge.connectors.mqtt:MqttConnector",
    "sparkplug": "shopfloor.edge.connectors.sparkplug:SparkplugConnector",
}


def connector_class(kind: str) -> Any:
    """The class registered for ``kind``."""
    try:
        target = BUILTIN[kind]
    except KeyError:
        known = ", ".join(sorted(BUILTIN))
        raise ConfigError(f"unknown connector kind {kind!r}; known kinds: {known}") from None
    module_name, _, attr = target.partition(":")
    return getattr(importlib.import_module(module_name), attr)


def create_connector(config: ConnectorConfigBase) -> Connector:
    """Build the connector a configuration section describes."""
    connector: Connector = connector_class(config.kind).from_config(config)
    return connector
