"""The Redis client for the platform's own state: counters, liveness, leases (not the broker).

One client per process on REDIS_STATE_URL; redis-py's connection pool notices a fork and opens
new connections in the child, so prefork pool children may use it too. Every key starts with
REDIS_KEY_PREFIX, so deployments and test runs sharing a server never see each other's keys.
"""

from __future__ import annotations

import functools

import redis
from django.conf import settings


@functools.cache
def state_redis() -> redis.Redis:
    return redis.Redis.from_url(
        settings.REDIS_STATE_URL,
        socket_connect_timeout=2,
        socket_timeout=5,
        health_check_interval=30,
    )


def state_key(*parts: object) -> str:
    """`<prefix><part>:<part>...`"""
    return settings.REDIS_KEY_PREFIX + ":".join(str(part) for part in parts)
