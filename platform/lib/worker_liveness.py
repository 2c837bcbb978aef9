"""Which workers are alive, and which tasks each one holds.

Every worker boot is an *incarnation* with an id of its own (`<node name>#<random>`): a worker
restarted under the same `-n` is a new incarnation, so the jobs of the one that died are not
mistaken for the new one's. The main process registers its incarnation when it starts and then,
every WORKER_HEARTBEAT_SECONDS, writes a report to the state Redis with a TTL of three beats:
its node, pid, queues, and the ids of every task it holds (prefetched, waiting for an ETA, or
running), read from Celery's own worker state in that process.

Readers (the reconciler) decide from reports:
- a worker is *alive* while its report exists;
- it is *dead* only when its report was missing on two looks at least one TTL apart, with Redis
  answering both times (`deaths_confirm`): an outage of Redis longer than the TTL expires every
  report at once, and a worker that is still running writes its next one within a beat;
- a live worker no longer holding a task that the database says it runs has ended that task
  without recording it (the database was unreachable); a job running on a live worker that
  still holds it is never touched.

The incarnation is set in the main process before the pool starts, so prefork children inherit
it; threads and solo pools share it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any

import redis
from celery.signals import worker_init, worker_ready, worker_shutdown
from django.conf import settings
from saas_platform.lib.state_redis import state_key, state_redis

logger = logging.getLogger(__name__)

_REGISTRY = "workers"  # a set of every incarnation that may still hold broker messages
_incarnation = ""
_pool_kills_on_time_limit = True
_stop = threading.Event()


@dataclass(frozen=True)
class WorkerReport:
    incarnation: str
    node: str
    pid: int
    queues: tuple[str, ...]
    held: frozenset[str]  # Celery task ids: reserved, scheduled (ETA) or running
    at: float  # epoch seconds when the report was taken
    concurrency: int = 0  # pool slots: how many jobs it runs at once


def heartbeat_ttl() -> int:
    return int(settings.WORKER_HEARTBEAT_SECONDS * 3)


def incarnation_new(nodename: str) -> str:
    return f"{nodename}#{secrets.token_hex(6)}"


def current_incarnation() -> str:
    """This worker boot's id; outside a worker, one for this process (tests, shells)."""
    return _incarnation or f"{socket.gethostname()}#pid{os.getpid()}"


def pool_kills_on_time_limit() -> bool:
    """Whether this worker's pool enforces hard time limits itself (prefork does; threads and
    solo do not, so the runner enforces them)."""
    return _pool_kills_on_time_limit


def unacked_transport_options(incarnation: str) -> dict[str, str]:
    """Broker transport options that keep this incarnation's unacknowledged messages apart.

    kombu's Redis transport keeps every delivered, unacknowledged message in one hash until it
    is acknowledged, and puts it back only after the visibility timeout (hours here). With a hash
    per incarnation, a dead worker's messages (prefetched, waiting for an ETA, running) can be
    put back as soon as it is known to be dead (saas_platform.lib.broker).
    """
    return {
        "unacked_key": f"unacked:{incarnation}",
        "unacked_index_key": f"unacked_index:{incarnation}",
        "unacked_mutex_key": f"unacked_mutex:{incarnation}",
    }


def _report_key(incarnation: str) -> str:
    return state_key("worker", incarnation)


def _missing_key(incarnation: str) -> str:
    return state_key("worker-missing", incarnation)


def report_publish(report: WorkerReport) -> None:
    document = {
        "node": report.node,
        "pid": report.pid,
        "queues": list(report.queues),
        "held": sorted(report.held),
        "at": report.at,
        "concurrency": report.concurrency,
    }
    pipe = state_redis().pipeline(transaction=False)
    pipe.set(_report_key(report.incarnation), json.dumps(document), ex=heartbeat_ttl())
    pipe.sadd(state_key(_REGISTRY), report.incarnation)
    pipe.delete(_missing_key(report.incarnation))
    pipe.execute()


def worker_reports(incarnations: set[str]) -> dict[str, WorkerReport]:
    """The current reports of those incarnations that have one (the live ones)."""
    if not incarnations:
        return {}
    names = sorted(incarnations)
    values = state_redis().mget([_report_key(name) for name in names])
    reports: dict[str, WorkerReport] = {}
    for name, raw in zip(names, values, strict=True):
        if raw is None:
            continue
        document = json.loads(raw)
        reports[name] = WorkerReport(
            incarnation=name,
            node=document["node"],
            pid=document["pid"],
            queues=tuple(document["queues"]),
            held=frozenset(document["held"]),
            at=document["at"],
            concurrency=int(document.get("concurrency", 0)),
        )
    return reports


def queue_consumers(queue: str) -> int:
    """How many live workers consume `queue` now (two Redis round trips)."""
    reports = worker_reports(registered_incarnations())
    return sum(1 for report in reports.values() if queue in report.queues)


def registered_incarnations() -> set[str]:
    members: set[bytes] = state_redis().smembers(state_key(_REGISTRY))  # type: ignore[assignment]
    return {member.decode() for member in members}


def deaths_confirm(missing: set[str], *, now: float | None = None) -> set[str]:
    """Of incarnations without a report now, those also missing one TTL ago or more.

    The first look records when the report was found missing; a later look at least one TTL
    after it confirms the death. Both looks reached Redis (this function raises otherwise), so
    a Redis outage alone never kills a worker: one that is alive reports again within a beat.
    """
    if not missing:
        return set()
    now = time.time() if now is None else now
    names = sorted(missing)
    pipe = state_redis().pipeline(transaction=False)
    for name in names:
        # Kept a day at most: an incarnation that reappears deletes it (report_publish).
        pipe.set(_missing_key(name), str(now), nx=True, ex=86_400)
    pipe.execute()
    first_seen = state_redis().mget([_missing_key(name) for name in names])
    return {
        name
        for name, value in zip(names, first_seen, strict=True)
        if value is not None and now - float(value) >= heartbeat_ttl()
    }


def worker_forget(incarnation: str) -> None:
    """Drop a dead incarnation once what it held has been dealt with."""
    pipe = state_redis().pipeline(transaction=False)
    pipe.srem(state_key(_REGISTRY), incarnation)
    pipe.delete(_report_key(incarnation), _missing_key(incarnation))
    pipe.execute()


# --- the worker's side --------------------------------------------------------------------------


def _held_task_ids() -> frozenset[str]:
    from celery.worker import state

    # A C-level copy under the GIL: the consumer thread changes the dict while we read it.
    return frozenset(state.requests.copy())


def _report_now(
    incarnation: str, node: str, queues: tuple[str, ...], concurrency: int
) -> WorkerReport:
    return WorkerReport(
        incarnation=incarnation,
        node=node,
        pid=os.getpid(),
        queues=queues,
        held=_held_task_ids(),
        at=time.time(),
        concurrency=concurrency,
    )


def _beat(incarnation: str, node: str, consumer_queues: Any, concurrency: int) -> None:
    while not _stop.is_set():
        try:
            queues = tuple(sorted(consumer_queues())) if consumer_queues else ()
            report_publish(_report_now(incarnation, node, queues, concurrency))
        except redis.RedisError as exc:
            logger.warning("worker heartbeat failed: %s", exc)
        except Exception:
            logger.exception("worker heartbeat failed")
        _stop.wait(settings.WORKER_HEARTBEAT_SECONDS)


@worker_init.connect
def _begin_incarnation(sender: Any = None, **_: Any) -> None:
    """In the main process, before the pool and the consumer start."""
    global _incarnation, _pool_kills_on_time_limit
    nodename = getattr(sender, "hostname", None) or socket.gethostname()
    _incarnation = incarnation_new(nodename)
    pool = str(getattr(sender, "pool_cls", "prefork"))
    _pool_kills_on_time_limit = "prefork" in pool.lower() or "processes" in pool.lower()
    app = getattr(sender, "app", None)
    if app is not None:
        options = dict(app.conf.broker_transport_options or {})
        options.update(unacked_transport_options(_incarnation))
        app.conf.broker_transport_options = options
    try:
        # Registered before the first message arrives, so a worker that dies at once is known.
        report_publish(
            WorkerReport(_incarnation, nodename, os.getpid(), (), frozenset(), time.time())
        )
    except redis.RedisError as exc:
        logger.warning("could not register worker %s: %s", _incarnation, exc)
    logger.info("worker incarnation %s", _incarnation)


@worker_ready.connect
def _start_heartbeat(sender: Any = None, **_: Any) -> None:
    node = getattr(sender, "hostname", None) or socket.gethostname()
    task_consumer = getattr(sender, "task_consumer", None)

    def consumer_queues() -> list[str]:
        queues = getattr(task_consumer, "queues", None) or []
        return [queue.name for queue in queues]

    controller = getattr(sender, "controller", None)
    concurrency = int(getattr(controller, "concurrency", 0) or 0)
    _stop.clear()
    threading.Thread(
        target=_beat,
        args=(current_incarnation(), node, consumer_queues, concurrency),
        name="worker-heartbeat",
        daemon=True,
    ).start()


@worker_shutdown.connect
def _stop_heartbeat(sender: Any = None, **_: Any) -> None:
    _stop.set()
    if _incarnation:
        # Gone from now on: the reconciler confirms the death a TTL later and puts back whatever
        # kombu could not restore at shutdown (normally nothing), then forgets the incarnation.
        with contextlib.suppress(redis.RedisError):
            state_redis().delete(_report_key(_incarnation))
