"""The URLs of CONTRACT.md's environment, turned into settings and varied for tests."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import dj_database_url


def database_from_url(url: str) -> dict[str, Any]:
    """A DATABASES entry from `postgres://user:pass@host:port/name?option=value`.

    dj-database-url keeps every libpq option of the query string (sslmode, sslrootcert,
    connect_timeout, options, host=/socket/dir, ...) in OPTIONS.
    """
    config: dict[str, Any] = dict(dj_database_url.parse(url))
    return config


def database_url_with_name(url: str, name: str) -> str:
    """The same server, another database (tests create and drop their own)."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, parts.fragment))


def redis_with_db(url: str, db: int) -> str:
    """The same Redis server, another logical database (the broker, cache and state apart).

    A unix socket URL names its database in the query string (`unix:///run/redis.sock?db=1`).
    """
    parts = urlsplit(url)
    if parts.scheme == "unix":
        query = [(k, v) for k, v in parse_qsl(parts.query) if k != "db"] + [("db", str(db))]
        return urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(query), ""))
    return urlunsplit((parts.scheme, parts.netloc, f"/{db}", parts.query, parts.fragment))
