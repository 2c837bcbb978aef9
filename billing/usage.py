"""This period's usage and the limits in force for a tenant (GET /api/v1/usage).

Usage comes from the Redis counters of billing.metering; the limits from billing.limits (plan,
annotations, overrides). The caller (jobs) names the job types to list: billing knows plans, not
the catalogue.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from django.conf import settings
from django.utils import timezone

from billing.limits import TenantLimits, tenant_limits
from billing.metering import usage_between


def period_bounds(now: datetime) -> tuple[datetime, datetime]:
    """The calendar month (UTC) containing `now`: [start, end)."""
    start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    end = (
        start.replace(year=start.year + 1, month=1)
        if start.month == 12
        else start.replace(month=start.month + 1)
    )
    return start, end


def limits_document(limits: TenantLimits, *, job_types: Iterable[str]) -> dict[str, Any]:
    rates = limits.rates_for(job_types)
    return {
        "jobs_per_month": limits.jobs_per_month,
        "submit_rate": limits.submit_rate.text,
        "submit_burst": limits.submit_rate.burst,
        "concurrency": limits.concurrency,
        "schedules": limits.schedules,
        "min_interval_seconds": limits.min_interval_seconds,
        "rates": {name: rate.text for name, rate in rates.items()},
        "bursts": {name: rate.burst for name, rate in rates.items()},
        "fairness_weight": limits.weight,
    }


def tenant_usage(*, tenant_id: int, job_types: Iterable[str]) -> dict[str, Any]:
    """The usage document of CONTRACT.md for this month so far."""
    limits = tenant_limits(tenant_id)
    start, end = period_bounds(timezone.now())
    totals = usage_between(tenant_id=tenant_id, start=start.date(), end=end.date())
    quota = limits.jobs_per_month
    percent = 100.0 * totals.jobs / quota if quota else 100.0
    return {
        "plan": limits.plan,
        "period_start": start,
        "period_end": end,
        "usage": {
            "jobs": totals.jobs,
            "attempts": totals.attempts,
            "run_seconds": round(totals.run_seconds, 3),
        },
        "quota": {
            "jobs_per_month": quota,
            "jobs_used": totals.jobs,
            "percent_used": round(percent, 1),
            "alarm_percent": settings.BILLING_QUOTA_ALARM_PERCENT,
            "alarm": percent >= settings.BILLING_QUOTA_ALARM_PERCENT,
        },
        "limits": limits_document(limits, job_types=job_types),
    }
