"""Connector configuration: the shared base and one model per protocol.

:data:`ConnectorConfig` is the tagged union of every protocol's section, chosen by its
``kind`` key.
"""

from typing import Annotated

from pydantic import Field

from shopfloor.config.connectors.base import ConnectorConfigBase, TagConfig
from shopfloor.config.connectors.modbus import ModbusConnectorConfig
from shopfloor.config.connectors.mqtt import MqttConnectorConfig
from shopfloor.config.connectors.opcua import OpcUaConnectorConfig
from shopfloor.config.connectors.s7 import S7ConnectorConfig
from shopfloor.config.connectors.simulator import SimulatorConnectorConfig
from shopfloor.config.connectors.sparkplug import SparkplugConnectorConfig

ConnectorConfig = Annotated[
    SimulatorConnectorConfig
    | ModbusConnectorConfig
    | S7ConnectorConfig
    | MqttConnectorConfig
    | OpcUaConnectorConfig
    | SparkplugConnectorConfig,
    Field(discriminator="kind"),
]

__all__ = [
    "ConnectorConfig",
    "ConnectorConfigBase",
    "ModbusConnectorConfig",
    "MqttConnectorConfig",
    "OpcUaConnectorConfig",
    "S7ConnectorConfig",
    "SimulatorConnectorConfig",
    "SparkplugConnectorConfig",
    "TagConfig",
]
