"""The edge: connectors, sampling, buffering and uplink. Never imports :mod:`shopfloor.server`."""
