"""The platform: ingest, historian, API and web. Never imports :mod:`shopfloor.edge`."""
