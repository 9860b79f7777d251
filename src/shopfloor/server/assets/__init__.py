"""The plant's ISA-95 asset model: equipment from templates, its tags and its alarms."""

from shopfloor.server.assets.model import AssetModel, Equipment, build_asset_model, load_asset_model

__all__ = ["AssetModel", "Equipment", "build_asset_model", "load_asset_model"]
