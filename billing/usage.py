"""This period's usage and the limits in force for a tenant (GET /api/v1/usage).

Usage comes from the Redis counters of billing.metering; the limits from the tenant's plan. The
per-type rates start from each job type's default, which the caller (jobs) passes in: billing
knows plans, not job types.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from django.utils import timezone

from billing.metering import usage_between
from billing.models import Plan
from billing.rates import rate_scale
from billing.selectors import tenant_plan


def period_bounds(now: datetime) -> tuple[datetime, datetime]:
    """The calendar month (UTC) containing `now`: [start, end)."""
    start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    end = (
        start.replace(year=start.year + 1, month=1)
        if start.month == 12
        else start.replace(month=start.month + 1)
    )
    return start, end


def plan_limits(plan: Plan, *, default_rates: Mapping[str, str]) -> dict[str, Any]:
    return {
        "jobs_per_month": plan.monthly_job_quota,
        "submit_rate": plan.submit_rate,
        "concurrency": plan.concurrency,
        "schedules": plan.max_schedules,
        "min_interval_seconds": plan.min_interval_seconds,
        "rates": {
            name: rate_scale(rate, plan.rate_multiplier) for name, rate in default_rates.items()
        },
    }


def tenant_usage(*, tenant_id: int, default_rates: Mapping[str, str]) -> dict[str, Any]:
    """The usage document of CONTRACT.md for this month so far."""
    plan = tenant_plan(tenant_id=tenant_id)
    start, end = period_bounds(timezone.now())
    totals = usage_between(tenant_id=tenant_id, start=start.date(), end=end.date())
    return {
        "plan": plan.slug,
        "period_start": start,
        "period_end": end,
        "usage": {"jobs": totals.jobs, "run_seconds": round(totals.run_seconds, 3)},
        "limits": plan_limits(plan, default_rates=default_rates),
    }
