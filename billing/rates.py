"""Rates in Celery's notation ("10/s", "100/m", "5/h"), as used by task annotations."""

from __future__ import annotations

import re

from django.core.exceptions import ValidationError

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


def validate_rate(value: str) -> None:
    """A model field validator: `value` is a rate above zero in Celery notation."""
    try:
        per_second = rate_per_second(value)
    except ValueError:
        raise ValidationError(
            '"%(value)s" is not a rate in Celery notation: a number, "/" and s, m or h, '
            'such as "10/s", "100/m" or "5/h".',
            code="invalid_rate",
            params={"value": value},
        ) from None
    if per_second <= 0:
        # A bucket with no refill would never admit anything again; suspend the tenant instead.
        raise ValidationError(
            '"%(value)s": a rate must be above zero.', code="zero_rate", params={"value": value}
        )


def validate_rate_overrides(value: object) -> None:
    """A model field validator: a JSON object of job type name -> rate in Celery notation."""
    if not isinstance(value, dict):
        raise ValidationError(
            'A JSON object of job type to rate, such as {"email.send": "5/s"}.',
            code="invalid_rate_overrides",
        )
    errors: list[ValidationError] = []
    for name, rate in value.items():
        if not isinstance(rate, str):
            errors.append(
                ValidationError(
                    '%(name)s: the rate must be a string such as "5/s".',
                    code="invalid_rate",
                    params={"name": name},
                )
            )
            continue
        try:
            validate_rate(rate)
        except ValidationError as exc:
            errors.extend(
                ValidationError(f"{name}: {message}", code="invalid_rate")
                for message in exc.messages
            )
    if errors:
        raise ValidationError(errors)
