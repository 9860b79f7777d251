"""Analytics on the platform's data: calculated tags (at ingest) and metrics (per window)."""

from shopfloor.server.analytics.calc import Calculation, Calculator
from shopfloor.server.analytics.metrics import Metric, MetricJob

__all__ = ["Calculation", "Calculator", "Metric", "MetricJob"]
