"""The ``shopfloor`` command. Wiring only: every verb hands off to a composition root."""

from __future__ import annotations


def main() -> None:
    """Entry point of the ``shopfloor`` console script."""
    raise SystemExit("shopfloor: not wired yet")
