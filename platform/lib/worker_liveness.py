"""Which workers are alive: each worker's main process refreshes a Redis key with a TTL.

The reconciler requeues `running` jobs whose worker has no live key: a worker that died whole
(host lost, OOM-killed, SIGKILL) would otherwise leave its jobs unacknowledged in Redis until the
broker's visibility timeout (hours). Lost pool children are Celery's business
(reject_on_worker_lost); this covers the main process.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from typing import Any

import redis
from celery.signals import worker_ready, worker_shutdown
from django.conf import settings
from saas_platform.lib.state_redis import state_key, state_redis

logger = logging.getLogger(__name__)

_stop = threading.Event()


def _client() -> redis.Redis:
    return state_redis()


def _key(nodename: str) -> str:
    return state_key("worker-alive", nodename)


def heartbeat_ttl() -> int:
    return int(settings.WORKER_HEARTBEAT_SECONDS * 3)


def workers_alive(nodenames: set[str]) -> set[str]:
    """The subset of `nodenames` with a live heartbeat."""
    if not nodenames:
        return set()
    names = sorted(nodenames)
    values = _client().mget([_key(name) for name in names])
    return {name for name, value in zip(names, values, strict=True) if value is not None}


def _beat(nodename: str) -> None:
    client = _client()
    while not _stop.is_set():
        try:
            client.set(_key(nodename), "1", ex=heartbeat_ttl())
        except redis.RedisError as exc:
            logger.warning("worker heartbeat failed: %s", exc)
        _stop.wait(settings.WORKER_HEARTBEAT_SECONDS)


@worker_ready.connect
def _start_heartbeat(sender: Any = None, **_: Any) -> None:
    nodename = getattr(sender, "hostname", None)
    if not nodename:
        return
    _stop.clear()
    threading.Thread(target=_beat, args=(nodename,), name="worker-heartbeat", daemon=True).start()


@worker_shutdown.connect
def _stop_heartbeat(sender: Any = None, **_: Any) -> None:
    _stop.set()
    nodename = getattr(sender, "hostname", None)
    if nodename:
        with contextlib.suppress(redis.RedisError):  # the key expires by itself anyway
            _client().delete(_key(nodename))
