"""Connector configuration: the shared base and one model per protocol.

:data:`ConnectorConfig` is the tagged union of every protocol's section, chosen by its
``kind`` key.
"""

from typing import Annotated

from pydantic import Field

from shopfloor.config.connectors.base import ConnectorConfigBase, TagConfig
from shopfloor.config.connectors.simulator import SimulatorConnectorConfig

ConnectorConfig = Annotated[SimulatorConnectorConfig, Field(discriminator="kind")]

__all__ = ["ConnectorConfig", "ConnectorConfigBase", "SimulatorConnectorConfig", "TagConfig"]
