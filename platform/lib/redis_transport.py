"""kombu's Redis transport, with one redis-py client per channel for its short commands.

kombu's `Channel.conn_or_acquire` builds a new redis-py client for every call that is not
handed one: recording a received message as unacknowledged, acknowledging it, publishing a
batch, reading a queue's length. Building a client costs about 60 µs of CPU on these machines
(redis-py copies its ~165 response callbacks into a case-insensitive dict each time:
redis/redis-py#3624), and a worker's main process did it twice for every job it ran, beside the
consumer loop and the dispatcher on the same interpreter (py-spy on bench.throughput's workers:
`Channel._create_client` under about 7 % of the main process's samples, in plain Celery's too).

A client holds only its connection pool and those callbacks, and redis-py clients are safe to
share between threads, so one client per channel and pool serves every such call, as the
channel's own `client` (its BRPOP connection) already does. A new pool (kombu makes one after a
fork or a connection error) gets a new client. Everything else is kombu's.

Registered by saas_platform.celery_app as kombu's transport for `redis://` and `rediss://`
broker URLs (REDIS_BROKER_TRANSPORT in saas_platform.settings); the URL still gives the host,
database, TLS and options.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from kombu.transport import redis as kombu_redis


class Channel(kombu_redis.Channel):
    _shared_client: Any = None

    @contextmanager
    def conn_or_acquire(self, client: Any = None) -> Iterator[Any]:
        if client:
            yield client
            return
        shared = self._shared_client
        if shared is None or shared.connection_pool is not self.pool:
            # Not in the type stubs of kombu's Channel, but kombu's own way to make one.
            shared = self._shared_client = self._create_client()  # type: ignore[attr-defined]
        yield shared


class Transport(kombu_redis.Transport):
    Channel = Channel
