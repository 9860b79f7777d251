"""Typed configuration: pydantic models and a TOML loader with path-and-line errors."""

from shopfloor.config.load import load_config, load_config_text
from shopfloor.config.models import ShopfloorConfig

__all__ = ["ShopfloorConfig", "load_config", "load_config_text"]
