"""Retention: each plan's `retention_days`; finished jobs older than that are deleted with
their attempts and results, per tenant, in batches (a periodic platform task, jobs.tasks).

Which tenants: those with usage counted within the longest retention plus RETENTION_SLACK_DAYS
(billing.selectors.tenants_counted_since). A job's end is counted on the day it ends, so every
tenant holding a job that may expire is in that set until well after the job has expired: the
sweep's cost grows with the tenants recently active, never with all tenants.

Per tenant: at most MAX_BATCHES batches of BATCH_SIZE jobs a sweep (one transaction each), so
a tenant with a huge backlog is worked down over several sweeps without holding locks long.
The candidates are found through the (status, created_at) index: a job created after the
cut-off cannot have finished before it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.db import DatabaseError, transaction
from django.utils import timezone
from saas_platform.lib.db import connection
from saas_platform.lib.tenant_context import UnknownTenant, tenant_activated

from billing.selectors import retention_days_max, tenant_plan, tenants_counted_since
from jobs.models import FINAL_STATUSES, Job, JobAttempt

logger = logging.getLogger(__name__)

BATCH_SIZE = 500
MAX_BATCHES = 20
RETENTION_SLACK_DAYS = 7


@dataclass
class SweepResult:
    tenants: int = 0
    jobs_deleted: int = 0
    failed: list[int] = field(default_factory=list)


def tenant_retention_apply(*, cutoff: datetime, batch_size: int = BATCH_SIZE) -> int:
    """In the active tenant's schema: delete up to MAX_BATCHES batches of jobs finished before
    `cutoff`, with their attempts and result rows. Returns the jobs deleted."""
    deleted = 0
    for _ in range(MAX_BATCHES):
        with transaction.atomic():
            ids = list(
                Job.objects.filter(
                    status__in=FINAL_STATUSES, created_at__lt=cutoff, finished_at__lt=cutoff
                )
                .order_by("created_at")
                .values_list("id", flat=True)[:batch_size]
            )
            if not ids:
                break
            # Every attempt's task id (a retry runs under a new one), the job's current included.
            attempts = JobAttempt.objects.filter(job_id__in=ids).values_list("task_id", flat=True)
            current = Job.objects.filter(id__in=ids).values_list("task_id", flat=True)
            task_ids = sorted({str(t) for t in [*attempts, *current]})
            with connection.cursor() as cursor:
                # django-celery-results' table, in this schema; rows keyed by the task ids.
                cursor.execute(
                    "DELETE FROM django_celery_results_taskresult WHERE task_id = ANY(%s)",
                    [task_ids],
                )
            JobAttempt.objects.filter(job_id__in=ids).delete()
            deleted += Job.objects.filter(id__in=ids).delete()[1].get("jobs.Job", 0)
        if len(ids) < batch_size:
            break
    return deleted


def retention_sweep(*, now: datetime | None = None, batch_size: int = BATCH_SIZE) -> SweepResult:
    """Every recently active tenant, its plan's retention applied; one tenant's failure does
    not stop the others."""
    now = now or timezone.now()
    since = (now - timedelta(days=retention_days_max() + RETENTION_SLACK_DAYS)).date()
    result = SweepResult()
    for tenant_id in tenants_counted_since(day=since):
        cutoff = now - timedelta(days=tenant_plan(tenant_id=tenant_id).retention_days)
        try:
            with tenant_activated(tenant_id):
                result.jobs_deleted += tenant_retention_apply(cutoff=cutoff, batch_size=batch_size)
        except (DatabaseError, UnknownTenant) as exc:
            # A tenant whose schema is gone (deleted) or broken: logged, the others go on.
            logger.warning("retention of tenant %s not applied: %s", tenant_id, exc)
            result.failed.append(tenant_id)
        result.tenants += 1
    return result
