"""Uplinks carry batches from the edge to the platform."""
