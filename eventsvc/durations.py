"""Go-style durations (`500ms`, `2s`, `1h30m`), the notation Kubernetes and NATS users know."""

from __future__ import annotations

import re

_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(value: str | int | float) -> float:
    """Seconds in `value`; a bare number is seconds. Raises ValueError naming the value."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a duration; write e.g. '30s', '5m' or '24h'")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError(f"{value!r} is negative; durations must be >= 0")
        return float(value)
    text = value.strip()
    if not text:
        raise ValueError("empty duration; write e.g. '30s', '5m' or '24h'")
    pos, total = 0, 0.0
    for match in _PART.finditer(text):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _UNITS[match.group(2)]
        pos = match.end()
    if pos != len(text):
        raise ValueError(
            f"{value!r} is not a duration; write e.g. '500ms', '30s', '5m', '1h30m' or '2d'"
        )
    return total


def format_duration(seconds: float) -> str:
    """The shortest readable form, for messages and logs."""
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 120:
        return f"{seconds:g}s"
    if seconds < 7200:
        return f"{seconds / 60:g}m"
    return f"{seconds / 3600:g}h"
