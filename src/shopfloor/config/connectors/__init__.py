"""Connector configuration: the shared base and one model per protocol."""
