"""The broker transport (saas_platform.lib.redis_transport): kombu's Redis transport, with one
redis-py client per channel instead of one per short command."""

from __future__ import annotations

import uuid
from typing import Any

from celery import current_app
from saas_platform.lib import redis_transport


def test_the_app_publishes_and_consumes_through_it():
    with current_app.connection_for_write() as connection:
        assert isinstance(connection.transport, redis_transport.Transport)
        assert isinstance(connection.default_channel, redis_transport.Channel)


def test_short_commands_share_one_client_per_pool(monkeypatch):
    built: list[Any] = []
    original = redis_transport.Channel._create_client

    def counting(self: Any, asynchronous: bool = False) -> Any:
        client = original(self, asynchronous=asynchronous)
        built.append(client)
        return client

    monkeypatch.setattr(redis_transport.Channel, "_create_client", counting)
    name = f"transport-{uuid.uuid4().hex[:8]}"
    with current_app.connection_for_write() as connection:
        channel = connection.default_channel
        simple = connection.SimpleQueue(name)
        try:
            for n in range(20):
                simple.put({"n": n})
            # Each get records the message as unacknowledged and each ack removes it: kombu's
            # own transport built a client for each of those, and for each put.
            received = []
            for _ in range(20):
                message = simple.get(timeout=5)
                received.append(message.payload["n"])
                message.ack()
            assert received == list(range(20))
            with channel.conn_or_acquire() as client:
                unacked = client.hlen(channel.unacked_key)
                assert client.llen(name) == 0
            assert unacked == 0
            short = [client for client in built if client.connection_pool is channel.pool]
            assert len(short) == 1, f"{len(short)} clients for the short commands"

            # A new pool (kombu makes one after a fork or a connection error) gets a new client.
            channel._disconnect_pools()
            with channel.conn_or_acquire() as client:
                assert client.connection_pool is channel.pool
                assert client is not short[0]
                assert client.ping()
            # A client handed in is used as it is.
            with channel.conn_or_acquire(short[0]) as handed:
                assert handed is short[0]
        finally:
            simple.queue.delete()
            simple.close()
