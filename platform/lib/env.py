"""Typed readers for settings from the environment.

Each helper stops start-up with ImproperlyConfigured naming the variable, so a typo in a deployment
fails at boot with a message instead of misbehaving later.
"""

from __future__ import annotations

import os
import re
from urllib.parse import urlsplit

from django.core.exceptions import ImproperlyConfigured

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}
_HOSTNAME = re.compile(
    r"^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$"
)


def env_str(name: str, default: str = "") -> str:
    return os.environ.get(name, default)


def env_bool(name: str, default: bool = False) -> bool:
    raw = os.environ.get(name)
    # Blank is unset, as for every other helper: `SECURE_COOKIES=` keeps the (secure) default.
    if raw is None or raw.strip() == "":
        return default
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ImproperlyConfigured(f"{name} must be true or false, got {raw!r}")


def env_int(name: str, default: int, *, minimum: int | None = None) -> int:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be a whole number, got {raw!r}") from None
    if minimum is not None and value < minimum:
        raise ImproperlyConfigured(f"{name} must be at least {minimum}, got {value}")
    return value


def env_url(name: str, *, schemes: tuple[str, ...], required: bool = False) -> str:
    """A URL with one of `schemes`, or "" when unset and not required."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        if required:
            raise ImproperlyConfigured(f"{name} must be set")
        return ""
    parts = urlsplit(raw)
    if parts.scheme not in schemes:
        raise ImproperlyConfigured(
            f"{name} must be a URL starting with {' or '.join(s + '://' for s in schemes)}, "
            f"got scheme {parts.scheme!r}"
        )
    try:
        parts.port  # noqa: B018 -- evaluating it validates the port number
    except ValueError:
        raise ImproperlyConfigured(f"{name} has an invalid port") from None
    return raw


def env_hostname(name: str, default: str) -> str:
    value = os.environ.get(name, default).strip().lower()
    if not _HOSTNAME.match(value):
        raise ImproperlyConfigured(f"{name} must be a host name such as example.com, got {value!r}")
    return value


def env_choice(name: str, choices: tuple[str, ...], default: str) -> str:
    raw = os.environ.get(name, "").strip().lower()
    if not raw:
        return default
    if raw not in choices:
        raise ImproperlyConfigured(f"{name} must be one of {', '.join(choices)}, got {raw!r}")
    return raw
