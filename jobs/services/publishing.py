"""Publishing job messages to the broker, after the rows are committed.

`jobs_publish_on_commit` is the safe path: it registers the publish to run only once the
surrounding transaction commits, so a worker never receives a job whose row it cannot see, and a
rolled-back submission publishes nothing. `jobs_publish_now_rollback_unsafe` publishes at once and
is for rows that are already committed (the reconciler, the releaser).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from celery import current_app
from django.db import InterfaceError, OperationalError, transaction
from django.utils import timezone
from kombu.exceptions import KombuError
from redis.exceptions import RedisError
from saas_platform.lib.db import connection
from saas_platform.lib.tenant_context import active_tenant, tenant_activated

from jobs.models import Job, JobStatus

logger = logging.getLogger(__name__)

# Messages per Redis pipeline (a batch submission is at most 1000 jobs: one pipeline).
_PIPELINE_SIZE = 1000


def jobs_publish_on_commit(jobs: Sequence[Job]) -> None:
    tenant = active_tenant()
    if tenant is None:
        raise RuntimeError("jobs are published with their tenant active")
    tenant_id = tenant.pk
    to_publish = [job for job in jobs if job.status == JobStatus.QUEUED]
    if to_publish:
        # The callback re-activates the tenant itself: on_commit callbacks run wherever the
        # outermost atomic block ends, which need not be inside the caller's tenant block.
        transaction.on_commit(lambda: _publish_in_tenant(tenant_id, to_publish))


def _publish_in_tenant(tenant_id: int, jobs: Sequence[Job]) -> None:
    with tenant_activated(tenant_id):
        jobs_publish_now_rollback_unsafe(jobs)


def _send(job: Job, producer: Any) -> None:
    options: dict[str, Any] = {
        "args": [str(job.id)],
        "task_id": str(job.task_id),
        "queue": job.queue,
        "producer": producer,
    }
    if job.run_at is not None and job.run_at > timezone.now():
        options["eta"] = job.run_at
    if job.time_limit_seconds is not None:
        options["time_limit"] = job.time_limit_seconds
    # The API's priority runs 0 (lowest) to 9 (highest); Redis serves broker priority 0 first.
    options["priority"] = 9 - job.priority
    current_app.send_task(job.type, **options)


def jobs_publish_now_rollback_unsafe(jobs: Sequence[Job]) -> int:
    """Publish committed jobs now; returns how many reached the broker.

    A broker failure is logged, not raised: the rows stay unpublished and the reconciler retries.
    So is a database failure while recording `published_at` (`_mark_published`).
    """
    published: list[Any] = []
    for start in range(0, len(jobs), _PIPELINE_SIZE):
        chunk = jobs[start : start + _PIPELINE_SIZE]
        try:
            # One Redis pipeline per chunk instead of a round trip per message; the chunk is
            # sent when the block exits, so it counts as published only after that.
            with current_app.producer_or_acquire() as producer, producer.batch(max_size=len(chunk)):
                for job in chunk:
                    _send(job, producer)
        except (KombuError, RedisError, OSError) as exc:
            # Includes BatchPublishError ("delivery is uncertain"): the rows stay unpublished and
            # the reconciler sends them again. A duplicate is harmless: the runner's claim lets
            # only one message run a job.
            logger.warning(
                "broker unavailable, %d of %d jobs left for the reconciler: %s",
                len(jobs) - len(published),
                len(jobs),
                exc,
            )
            break
        published.extend(job.id for job in chunk)
    if published:
        _mark_published(published)
    return len(published)


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
