"""Sending job messages to the broker, for rows that are already committed.

Jobs are not published by whoever submits them: they wait in the tenant's table until the
dispatcher (jobs.services.dispatch) sends them in fair order. `jobs_send` is its way out; the
reconciler's `jobs_publish_now_rollback_unsafe` sends a lost message again and records it. Both
run outside any transaction, on committed rows, so a worker never receives a job whose row it
cannot see (hence "rollback unsafe": never call them with uncommitted rows).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from celery import current_app
from celery.utils import time as celery_time
from dateutil.parser import isoparse  # type: ignore[import-untyped]  # Celery's dependency
from django.db import InterfaceError, OperationalError
from django.utils import timezone
from kombu.exceptions import KombuError
from redis.exceptions import RedisError
from saas_platform.lib.db import connection

from jobs.models import Job

logger = logging.getLogger(__name__)

# Messages per Redis pipeline (a batch submission is at most 1000 jobs: one pipeline).
_PIPELINE_SIZE = 1000


# Of a task's own options (Task._get_exec_options: its attributes, annotations included), those
# send_task puts into the message itself, and those the job's own values replace; it hands the
# rest (serializer, delivery_mode, compression, exchange, routing_key, ...) to the publish call.
_MESSAGE_OPTIONS = ("time_limit", "soft_time_limit", "expires")
_JOB_OPTIONS = ("queue", "priority")


@dataclass(frozen=True)
class _TaskOptions:
    """What Celery's send_task adds from a registered task's own options."""

    time_limit: float | None = None
    soft_time_limit: float | None = None
    expires: Any = None
    publish: dict[str, Any] = field(default_factory=dict)


def _task_options(task: Any) -> _TaskOptions:
    given = {name: value for name, value in task._get_exec_options().items() if value is not None}
    return _TaskOptions(
        time_limit=given.get("time_limit"),
        soft_time_limit=given.get("soft_time_limit"),
        expires=given.get("expires"),
        publish={
            name: value
            for name, value in given.items()
            if name not in _MESSAGE_OPTIONS and name not in _JOB_OPTIONS
        },
    )


def _expiration(expires: Any, now: datetime) -> float:
    """The message's time to live for an `expires`, in seconds, as send_task computes it (a
    past time is 0: expired on arrival unless a consumer takes it at once)."""
    # Celery's own subtraction (naive and aware times alike); its type stubs omit it.
    subtract = celery_time.subtract_datetimes  # type: ignore[attr-defined]
    if isinstance(expires, datetime):
        seconds = float(subtract(expires, now).total_seconds())
    elif isinstance(expires, str):
        seconds = float(subtract(isoparse(expires), now).total_seconds())
    else:
        seconds = float(expires)
    return max(0.0, seconds)


@dataclass
class _Sender:
    """What every message of one jobs_send call shares, looked up once for all of them."""

    app: Any = field(default_factory=lambda: current_app)
    options: dict[str, _TaskOptions] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.amqp = self.app.amqp
        # As send_task sets them: the RPC backend's reply queue (unused with ours), and whether
        # a task-sent event goes out with each message.
        self.reply_to = self.app.thread_oid
        self.sent_event = bool(self.app.conf.task_send_sent_event)

    def task_options(self, name: str) -> _TaskOptions:
        found = self.options.get(name)
        if found is None:
            task = self.app.tasks.get(name)
            # A type this process does not know: send_task adds nothing either.
            found = self.options[name] = _TaskOptions() if task is None else _task_options(task)
        return found

    def send(self, job: Job, producer: Any) -> None:
        """The message Celery's `send_task(job.type, ...)` sends, built by the same two calls
        it makes (`amqp.create_task_message`, then `amqp.send_task_message`, which routes it
        and fires the publish signals that stamp the tenant), without the rest of send_task:
        its routing (`task_routes` does not apply: a job's queue is its type's, or the one it
        was given), the calling task's lineage (the dispatcher is no task), the results
        backend's on_task_call (a no-op for ours), the AsyncResult, and a lookup of Celery's
        configuration for each. That was half
        of send_task's 122 µs of CPU a job in a dispatcher's turn of 40 jobs (in process);
        tests/test_publishing.py checks that the two messages are the same (but for the copy of
        `argsrepr` that send_task also leaves among the message's properties)."""
        options = self.task_options(job.type)
        limit = job.time_limit_seconds
        message = self.amqp.create_task_message(
            str(job.task_id),
            job.type,
            [str(job.id)],
            {},
            reply_to=self.reply_to,
            time_limit=limit if limit is not None else options.time_limit,
            soft_time_limit=options.soft_time_limit,
            expires=options.expires,
            create_sent_event=self.sent_event,
            # send_task's too: the task's own ignore_result is not one of the options it takes
            # from the task, and the worker reads the task's.
            ignore_result=None,
            # What monitoring shows as the task's arguments (Flower, task events, the results
            # admin): the job id alone says nothing about whose job it is.
            argsrepr=f"['{job.id}'] tenant={connection.schema_name}",
            kwargsrepr="{}",
        )
        # As send_task does: a connection error comes out as kombu's own (a KombuError).
        with producer.connection._reraise_as_library_errors():
            self._publish(job, producer, message, options)

    def _publish(self, job: Job, producer: Any, message: Any, options: _TaskOptions) -> None:
        publish = options.publish
        if options.expires is not None:
            publish = {**publish, "expiration": _expiration(options.expires, self.app.now())}
        self.amqp.send_task_message(
            producer,
            job.type,
            message,
            **publish,
            queue=job.queue,
            # The API's priority runs 0 (lowest) to 9 (highest); Redis serves broker priority 0
            # first.
            priority=9 - job.priority,
            # Celery publishes to a direct queue through the anonymous exchange, and every
            # worker declares the queues it consumes: declaring them again before each message
            # (kombu's maybe_declare and the entity copies it makes) was about a fifth of
            # send_task's CPU.
            declare=[],
            # A failure is the caller's to handle (the dispatcher puts the jobs back to wait
            # and tries again a second later; the reconciler's next pass does): publishing must
            # not hold the dispatcher in kombu's retry loop meanwhile.
            retry=False,
        )


def jobs_send(jobs: Sequence[Job]) -> list[Any]:
    """Send the jobs' messages now; returns the ids of those that reached the broker.

    A broker failure is logged, not raised: the caller decides what becomes of the rest.
    """
    sent: list[Any] = []
    sender = _Sender()
    for start in range(0, len(jobs), _PIPELINE_SIZE):
        chunk = jobs[start : start + _PIPELINE_SIZE]
        try:
            # One Redis pipeline per chunk instead of a round trip per message; the chunk is
            # sent when the block exits, so it counts as sent only after that.
            with current_app.producer_or_acquire() as producer, producer.batch(max_size=len(chunk)):
                for job in chunk:
                    sender.send(job, producer)
        except (KombuError, RedisError, OSError) as exc:
            # Includes BatchPublishError ("delivery is uncertain"). A duplicate is harmless: the
            # runner's claim lets only one message run a job.
            logger.warning(
                "broker unavailable, %d of %d jobs not sent: %s",
                len(jobs) - len(sent),
                len(jobs),
                exc,
            )
            break
        sent.extend(job.id for job in chunk)
    return sent


def jobs_publish_now_rollback_unsafe(jobs: Sequence[Job]) -> int:
    """Send committed jobs now and record it; returns how many reached the broker.

    A database failure while recording `published_at` is logged, not raised (`_mark_published`).
    """
    sent = jobs_send(jobs)
    if sent:
        _mark_published(sent)
    return len(sent)


def _mark_published(job_ids: Sequence[Any]) -> None:
    """Record that the jobs' messages went out; a database failure here is logged, not raised.

    The rows committed and the messages were sent before this: the jobs are accepted. Raising
    would reach the client as a 503 ("nothing was accepted"), and its retry would duplicate the
    job. Unrecorded, the jobs stay "unpublished" and the reconciler sends them again, which is
    harmless: the runner's claim lets only one message run a job.
    """
    try:
        Job.objects.filter(id__in=job_ids).update(published_at=timezone.now())
    except (OperationalError, InterfaceError) as exc:
        if connection.in_atomic_block:
            raise  # a caller's transaction is broken now: it must not carry on unaware
        # Left open on purpose: the caller may still need it before answering (job_submit's next
        # on_commit call asks it whether it is in autocommit, which would reconnect a closed
        # connection and fail while the database is down). The error marked it, and the end of
        # the request or task (close_old_connections) closes it if it is broken.
        logger.warning(
            "could not record %d published jobs, left for the reconciler: %s", len(job_ids), exc
        )
