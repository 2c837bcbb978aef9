"""Keeping accepted work moving: the reconciler, run periodically by beat for every tenant.

1. Publish jobs that were committed but never published (the broker was down at submit time).
2. Release `scheduled` jobs whose run_at is near: they go to the broker with an ETA.
3. Requeue `running` jobs whose worker died whole (its liveness key expired), and jobs `running`
   for longer than their hard time limit allows (their end was never recorded: the database
   was unreachable when the worker tried), under a new task id, so the old message, if Redis
   ever restores it, is stale and dropped.
All read through indexes (jobs.models.Job.Meta), so a tenant with nothing to do costs a few
index probes.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db import transaction
from django.utils import timezone
from saas_platform.lib.db import connection
from saas_platform.lib.worker_liveness import heartbeat_ttl, worker_reports

from jobs.catalogue import UnknownJobType, job_type_get
from jobs.models import Job, JobStatus
from jobs.services.publishing import jobs_publish_now_rollback_unsafe
from jobs.services.submission import BROKER_DELAY_LIMIT
from jobs.services.transitions import job_requeue_rescued

logger = logging.getLogger(__name__)


def incarnation_of(worker: str) -> str:
    """The incarnation part of Job.worker ("<incarnation>:<pid>")."""
    return worker.rsplit(":", 1)[0]


# Give the submitting process's own on_commit publish time to happen before stepping in.
UNPUBLISHED_GRACE = timedelta(seconds=5)
# Beyond its hard time limit, how long a running job may go unrecorded before it is requeued.
STUCK_GRACE = timedelta(seconds=60)
BATCH = 500


@dataclass(frozen=True)
class ReconcileReport:
    republished: int
    released: int
    rescued: int


def jobs_release_due() -> int:
    """Move scheduled jobs due within the broker-delay window to queued and publish them."""
    horizon = timezone.now() + BROKER_DELAY_LIMIT
    with transaction.atomic():
        due = list(
            Job.objects.select_for_update(skip_locked=True)
            .filter(status=JobStatus.SCHEDULED, run_at__lte=horizon)
            .order_by("run_at")[:BATCH]
        )
        if not due:
            return 0
        Job.objects.filter(id__in=[job.id for job in due]).update(status=JobStatus.QUEUED)
    for job in due:
        job.status = JobStatus.QUEUED
    # Committed above: a crash before this line leaves them queued and unpublished, which the
    # next pass republishes.
    return jobs_publish_now_rollback_unsafe(due)


def jobs_republish_unpublished() -> int:
    cutoff = timezone.now() - UNPUBLISHED_GRACE
    stranded = list(
        Job.objects.filter(
            status=JobStatus.QUEUED, published_at__isnull=True, created_at__lt=cutoff
        ).order_by("created_at")[:BATCH]
    )
    if not stranded:
        return 0
    published = jobs_publish_now_rollback_unsafe(stranded)
    logger.info(
        "republished %d of %d stranded jobs in %s", published, len(stranded), connection.schema_name
    )
    return published


def _overdue(
    job_type: str, time_limit: int | None, started_at: datetime | None, now: datetime
) -> bool:
    """Running past its hard time limit: Celery would have ended that attempt by now."""
    if started_at is None:
        return False  # the query only returns rows with started_at; this keeps the type honest
    limit = time_limit
    if limit is None:
        try:
            limit = job_type_get(job_type).time_limit_seconds
        except UnknownJobType:
            return True  # a job type that no longer exists cannot be running
    return started_at + timedelta(seconds=limit) + STUCK_GRACE < now


def jobs_rescue_from_dead_workers() -> int:
    """Requeue running jobs whose worker's liveness key is gone, or that are overdue."""
    now = timezone.now()
    # Younger jobs may belong to a worker whose first heartbeat is still on its way.
    cutoff = now - timedelta(seconds=heartbeat_ttl())
    running = list(
        Job.objects.filter(status=JobStatus.RUNNING, started_at__lt=cutoff)
        .exclude(worker="")
        .values_list("id", "worker", "type", "time_limit_seconds", "started_at")[:BATCH]
    )
    if not running:
        return 0
    alive = worker_reports({incarnation_of(row[1]) for row in running})
    orphans = [
        (job_id, worker)
        for job_id, worker, job_type, time_limit, started_at in running
        if incarnation_of(worker) not in alive or _overdue(job_type, time_limit, started_at, now)
    ]
    rescued: list[Job] = []
    for job_id, worker in orphans:
        # Conditional on the same worker: if the job moved on meanwhile, leave it be.
        updated = job_requeue_rescued(
            job_id=str(job_id),
            task_id=str(uuid.uuid4()),
            worker=worker,
            reason="worker lost, or its end was never recorded: requeued by the reconciler",
        )
        if updated:
            rescued.append(Job.objects.get(id=job_id))
    if rescued:
        logger.warning(
            "requeued %d jobs of dead workers in %s", len(rescued), connection.schema_name
        )
        jobs_publish_now_rollback_unsafe(rescued)
    return len(rescued)


def tenant_reconcile() -> ReconcileReport:
    """One pass for the active tenant."""
    return ReconcileReport(
        republished=jobs_republish_unpublished(),
        released=jobs_release_due(),
        rescued=jobs_rescue_from_dead_workers(),
    )
