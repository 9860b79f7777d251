"""shopfloor: an on-premise industrial internet platform.

Edge connectors collect values from the equipment a plant already owns, a historian keeps
them, and a web dashboard and REST API show them. Data never leaves the building unless
the owner sends it.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("shopfloor")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without install
    __version__ = "0.0.0"

__all__ = ["__version__"]
