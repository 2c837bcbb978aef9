"""The monthly job quota, checked at submission from the Redis counters (billing.metering).

One HGET per submission (the month's `jobs` of the tenant), no public-schema read beyond the
cached limits. The check and the count are not one atomic step: concurrent requests that all
pass the check may together go over by as many jobs as they carry, which a quota of thousands
of jobs a month can bear. What is counted is what was accepted (billing.metering counts jobs
on commit), so a refused request never uses up quota.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime

from django.conf import settings
from django.utils import timezone

from billing.limits import tenant_limits
from billing.metering import month_jobs
from billing.usage import period_bounds


@dataclass(frozen=True)
class QuotaState:
    used: int
    quota: int
    period_end: datetime

    @property
    def percent(self) -> float:
        return 100.0 * self.used / self.quota if self.quota else 100.0

    @property
    def alarm(self) -> bool:
        return self.percent >= settings.BILLING_QUOTA_ALARM_PERCENT


class QuotaExceeded(Exception):
    """The submission would take the tenant over its monthly job quota; nothing was written."""

    def __init__(self, *, state: QuotaState, wanted: int, now: datetime) -> None:
        super().__init__(
            f"Over the monthly quota of {state.quota:,} jobs: {state.used:,} used this period, "
            f"{wanted:,} more asked for. The quota renews at {state.period_end.isoformat()}."
        )
        self.state = state
        self.wanted = wanted
        # Whole seconds until the period ends, at least 1 (RFC 9110 Retry-After).
        self.retry_after = max(1, math.ceil((state.period_end - now).total_seconds()))


def quota_state(*, tenant_id: int, now: datetime | None = None) -> QuotaState:
    """Raises redis.RedisError if the counters cannot be read."""
    now = (now or timezone.now()).astimezone(UTC)
    _, end = period_bounds(now)
    used = month_jobs(tenant_id=tenant_id, day=now.date())
    return QuotaState(used=used, quota=tenant_limits(tenant_id).jobs_per_month, period_end=end)


def quota_admit(*, tenant_id: int, jobs: int, now: datetime | None = None) -> QuotaState:
    """Raise QuotaExceeded if `jobs` more would exceed the month's quota."""
    now = (now or timezone.now()).astimezone(UTC)
    state = quota_state(tenant_id=tenant_id, now=now)
    if state.used + jobs > state.quota:
        raise QuotaExceeded(state=state, wanted=jobs, now=now)
    return state
