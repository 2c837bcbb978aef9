"""This period's usage and the limits in force for a tenant (GET /api/v1/usage).

Usage is counted from the tenant's Job table for now; the metering issue replaces this with Redis
counters rolled up per period.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.db.models import DurationField, ExpressionWrapper, F, Sum
from django.utils import timezone

from billing.rates import rate_scale
from jobs.catalogue import catalogue
from jobs.models import Job


def period_bounds(now: datetime) -> tuple[datetime, datetime]:
    """The calendar month (UTC) containing `now`: [start, end)."""
    start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    end = (
        start.replace(year=start.year + 1, month=1)
        if start.month == 12
        else start.replace(month=start.month + 1)
    )
    return start, end


def tenant_limits(tenant: Any) -> dict[str, Any]:
    plan = tenant.plan
    return {
        "jobs_per_month": plan.monthly_job_quota,
        "submit_rate": plan.submit_rate,
        "concurrency": plan.concurrency,
        "schedules": plan.max_schedules,
        "min_interval_seconds": plan.min_interval_seconds,
        "rates": {
            name: rate_scale(job_type.default_rate, plan.rate_multiplier)
            for name, job_type in catalogue().items()
        },
    }


def tenant_usage(tenant: Any) -> dict[str, Any]:
    """Must run with the tenant's schema active."""
    start, end = period_bounds(timezone.now())
    in_period = Job.objects.filter(created_at__gte=start, created_at__lt=end)
    run_time = in_period.filter(started_at__isnull=False, finished_at__isnull=False).aggregate(
        total=Sum(
            ExpressionWrapper(F("finished_at") - F("started_at"), output_field=DurationField())
        )
    )["total"]
    return {
        "plan": tenant.plan.slug,
        "period_start": start,
        "period_end": end,
        "usage": {
            "jobs": in_period.count(),
            "run_seconds": round(run_time.total_seconds(), 3) if run_time else 0.0,
        },
        "limits": tenant_limits(tenant),
    }
