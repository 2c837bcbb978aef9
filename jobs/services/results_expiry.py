"""Result expiry: django-celery-results rows kept no longer than their job type says, and never
longer than the tenant plan's retention.

Celery's own cleanup (`result_expires`, the daily `celery.backend_cleanup`) is off: it would run
in the public schema, which has no results table (platform/settings.py). Here the reconciler's
full sweeps, which visit every tenant anyway (every 10 minutes), call results_expire in each
tenant's schema: no extra pass over the tenants. The Job rows are not touched; they are the
record of what ran, and their own retention belongs to billing's plan.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from django.utils import timezone
from django_celery_results.models import TaskResult
from saas_platform.lib.db import connection

from billing.selectors import tenant_plan
from jobs.catalogue import catalogue


def result_lifetimes(retention_days: int) -> dict[str, timedelta]:
    """Per job type, how long its result rows live: its own expiry, capped by the retention."""
    retention = timedelta(days=retention_days)
    return {
        name: min(timedelta(seconds=job_type.result_expires_seconds), retention)
        if job_type.result_expires_seconds is not None
        else retention
        for name, job_type in catalogue().items()
    }


def results_expire(*, now: datetime | None = None) -> int:
    """Delete the active tenant's expired result rows; returns how many (index on date_done)."""
    now = now or timezone.now()
    lifetimes = result_lifetimes(tenant_plan(tenant_id=connection.tenant.pk).retention_days)
    deleted = 0
    # Grouped by lifetime: one DELETE per distinct lifetime, not per job type.
    by_lifetime: dict[timedelta, list[str]] = {}
    for name, lifetime in lifetimes.items():
        by_lifetime.setdefault(lifetime, []).append(name)
    longest = max(lifetimes.values())
    for lifetime, names in by_lifetime.items():
        count, _ = TaskResult.objects.filter(
            task_name__in=names, date_done__lt=now - lifetime
        ).delete()
        deleted += count
    # Rows of types no longer in the catalogue (or of no type): the longest lifetime.
    count, _ = (
        TaskResult.objects.filter(date_done__lt=now - longest)
        .exclude(task_name__in=list(lifetimes))
        .delete()
    )
    return deleted + count
