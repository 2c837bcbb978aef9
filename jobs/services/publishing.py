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
from django.db import transaction
from django.utils import timezone
from kombu.exceptions import KombuError
from redis.exceptions import RedisError
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
        Job.objects.filter(id__in=published).update(published_at=timezone.now())
    return len(published)
