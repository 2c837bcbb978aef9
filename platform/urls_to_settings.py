"""Turn the URLs of CONTRACT.md's environment into Django setting dictionaries."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit, urlunsplit


def database_from_url(url: str) -> dict[str, Any]:
    """`postgres://user:pass@host:port/name?host=/socket/dir` to a DATABASES entry."""
    parts = urlsplit(url)
    query = {key: values[-1] for key, values in parse_qs(parts.query).items()}
    host = unquote(parts.hostname or "") or query.pop("host", "")
    options: dict[str, Any] = {}
    if "sslmode" in query:
        options["sslmode"] = query.pop("sslmode")
    return {
        "NAME": unquote(parts.path.lstrip("/")) or "postgres",
        "USER": unquote(parts.username or "") or "postgres",
        "PASSWORD": unquote(parts.password or ""),
        "HOST": host,
        "PORT": str(parts.port or ""),
        "OPTIONS": options,
    }


def database_url_with_name(url: str, name: str) -> str:
    """The same server, another database (tests create and drop their own)."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, parts.fragment))


def redis_with_db(url: str, db: int) -> str:
    """The same Redis server, another logical database (cache apart from the broker)."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{db}", parts.query, parts.fragment))
