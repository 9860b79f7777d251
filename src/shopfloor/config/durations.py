"""Durations as people write them in configuration files: ``500ms``, ``30s``, ``2h``, ``1d``."""

from __future__ import annotations

import re

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)\s*$")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration_s(text: str) -> float:
    """Parse ``500ms``, ``30s``, ``5m``, ``2h`` or ``1d`` into seconds.

    Raises:
        ValueError: the text is not a duration; the message shows the accepted forms.
    """
    match = _DURATION.match(text)
    if not match:
        raise ValueError(f"expected a duration like 500ms, 30s, 5m, 2h or 1d, got {text!r}")
    return float(match.group(1)) * _UNIT_S[match.group(2)]
