"""Rates in Celery's notation ("10/s", "100/m", "5/h"), as used by task annotations."""

from __future__ import annotations

import re

_RATE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*/\s*([smh])\s*$")
_SECONDS = {"s": 1, "m": 60, "h": 3600}


def rate_per_second(rate: str) -> float:
    match = _RATE.match(rate)
    if match is None:
        raise ValueError(f"not a rate in Celery notation: {rate!r}")
    return float(match.group(1)) / _SECONDS[match.group(2)]


def rate_scale(rate: str, multiplier: float) -> str:
    """`rate` times `multiplier`, kept in the same unit ("10/s" x 2.5 = "25/s")."""
    match = _RATE.match(rate)
    if match is None:
        raise ValueError(f"not a rate in Celery notation: {rate!r}")
    scaled = float(match.group(1)) * multiplier
    number = f"{scaled:.0f}" if scaled == int(scaled) else f"{scaled:g}"
    return f"{number}/{match.group(2)}"
