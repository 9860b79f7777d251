"""Production analytics over the historian: shift calendar, downtime, OEE."""
