"""What the broker (kombu's Redis transport) holds, read for the reconciler.

- Every message carries the time it was published (`published_at` header, stamped here at
  publish), so the oldest message still waiting in a queue says how far consumption has got:
  kombu pushes new messages at one end of a queue's list and workers pop from the other, so a
  message published before the one waiting at the popping end is no longer in the list.
- A dead worker incarnation's unacknowledged messages (prefetched, waiting for an ETA, running)
  sit in a hash of its own (worker_liveness.unacked_transport_options) and are put back on their
  queues here, marked redelivered, as kombu itself does after the visibility timeout.

These read kombu's Redis layout (the list per priority step, the unacked hash), which is why they
go through kombu's own channel methods wherever one exists.
"""

from __future__ import annotations

import functools
import json
import logging
import time
from typing import Any

import redis
from celery import current_app
from celery.signals import before_task_publish
from django.conf import settings
from saas_platform.lib.worker_liveness import unacked_transport_options

logger = logging.getLogger(__name__)

PUBLISHED_AT_HEADER = "published_at"


@before_task_publish.connect
def _stamp_published_at(headers: dict[str, Any] | None = None, **_: Any) -> None:
    if headers is not None:
        headers[PUBLISHED_AT_HEADER] = time.time()


def _published_at(raw: bytes | None) -> float | None:
    if raw is None:
        return None
    try:
        value = json.loads(raw).get("headers", {}).get(PUBLISHED_AT_HEADER)
    except (ValueError, AttributeError):
        return None
    return float(value) if isinstance(value, int | float) else None


# kombu's Redis transport files a queue's messages in one list per priority step: the queue's own
# name for step 0, `<queue>\x06\x16<step>` for the others (Channel.sep, Channel._q_for_pri).
_PRIORITY_SEP = "\x06\x16"


@functools.cache
def _broker_client() -> redis.Redis:
    return redis.Redis.from_url(
        settings.CELERY_BROKER_URL, socket_connect_timeout=2, socket_timeout=5
    )


def _priority_steps() -> list[int]:
    options: dict[str, Any] = settings.CELERY_BROKER_TRANSPORT_OPTIONS
    return sorted({int(step) for step in options.get("priority_steps") or [0]})


def _list_key(queue: str, step: int) -> str:
    prefix = settings.CELERY_BROKER_TRANSPORT_OPTIONS.get("global_keyprefix") or ""
    return f"{prefix}{queue}{_PRIORITY_SEP}{step}" if step else f"{prefix}{queue}"


def oldest_waiting(queue: str) -> dict[int, float | None]:
    """Per broker priority step of `queue`: when the message next in line was published, or
    None when that list is empty (or its next message carries no time).

    The values are the publishers' clocks, like Job.published_at; compare them with that.
    """
    steps = _priority_steps()
    pipe = _broker_client().pipeline(transaction=False)
    for step in steps:
        pipe.lindex(_list_key(queue, step), -1)
    heads = pipe.execute()
    return {step: _published_at(raw) for step, raw in zip(steps, heads, strict=True)}


def queue_depth(queue: str) -> int:
    """Messages waiting in `queue` (every priority), not counting those workers hold."""
    pipe = _broker_client().pipeline(transaction=False)
    for step in _priority_steps():
        pipe.llen(_list_key(queue, step))
    return sum(int(length) for length in pipe.execute())


def broker_step(steps: list[int], priority: int) -> int:
    """The priority step a message of broker priority `priority` is filed under (the rule of
    kombu's Channel.priority: the highest step not above it)."""
    eligible = [step for step in sorted(steps) if step <= priority]
    return eligible[-1] if eligible else min(steps)


def unacked_restore(incarnation: str) -> int:
    """Put every message the incarnation held back on its queue; returns how many.

    Only for an incarnation known to be dead: a live one would then run them a second time
    (harmless, the claim lets one message run a job, but wasteful).
    """
    options = {**(current_app.conf.broker_transport_options or {})}
    options.update(unacked_transport_options(incarnation))
    with current_app.connection_for_write(transport_options=options) as connection:
        channel: Any = connection.default_channel
        client = channel.client
        # As in oldest_waiting: HKEYS is not a command kombu prefixes for us.
        tags = client.hkeys((channel.global_keyprefix or "") + channel.unacked_key)
        for tag in tags:
            # kombu's own restore: back to its queue's list for its priority, at the popping end,
            # flagged redelivered; atomic per message (WATCH on the hash).
            channel.qos.restore_by_tag(tag, client)
        client.delete(channel.unacked_index_key, channel.unacked_mutex_key)
    if tags:
        logger.warning("put back %d messages held by dead worker %s", len(tags), incarnation)
    return len(tags)
