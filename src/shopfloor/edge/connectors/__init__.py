"""Connectors: one module per protocol, all behind :class:`~.base.Connector`."""
