"""Typed configuration: pydantic models and a TOML loader with path-and-line errors."""

from shopfloor.config.edge import EdgeConfig
from shopfloor.config.load import load_config, load_config_text, load_edge_config, load_model
from shopfloor.config.models import ShopfloorConfig

__all__ = [
    "EdgeConfig",
    "ShopfloorConfig",
    "load_config",
    "load_config_text",
    "load_edge_config",
    "load_model",
]
