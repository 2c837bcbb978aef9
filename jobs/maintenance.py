"""Keeping accepted work moving: the reconciler, run periodically by beat for every tenant.

1. Publish jobs that were committed but never published (the broker was down at submit time).
2. Release `scheduled` jobs whose run_at is near: they go to the broker with an ETA.
Both read through partial indexes (jobs.models.Job.Meta), so a tenant with nothing to do costs
one index probe each.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta

from django.db import connection, transaction
from django.utils import timezone

from jobs.models import Job, JobStatus
from jobs.publishing import jobs_publish_now_rollback_unsafe
from jobs.services import BROKER_DELAY_LIMIT

logger = logging.getLogger(__name__)

# Give the submitting process's own on_commit publish time to happen before stepping in.
UNPUBLISHED_GRACE = timedelta(seconds=5)
BATCH = 500


@dataclass(frozen=True)
class ReconcileReport:
    republished: int
    released: int


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


def tenant_reconcile() -> ReconcileReport:
    """One pass for the active tenant."""
    return ReconcileReport(republished=jobs_republish_unpublished(), released=jobs_release_due())
