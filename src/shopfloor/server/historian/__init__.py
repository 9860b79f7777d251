"""Time-series storage behind one :class:`~shopfloor.server.historian.base.Historian` protocol."""
