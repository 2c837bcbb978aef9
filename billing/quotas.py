"""The monthly job quota, checked at submission from the Redis counters (billing.metering).

One read per submission (the month's `jobs` of the tenant), in the same Redis script as the
submit rate's bucket (jobs.services.admission), and no public-schema read beyond the cached
limits. The check and the count are not one atomic step: concurrent requests that all
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
from saas_platform.lib.rate_buckets import CapReached, CounterCap

from billing.limits import tenant_limits
from billing.metering import month_counter
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


def quota_cap(*, tenant_id: int, jobs: int, now: datetime | None = None) -> CounterCap:
    """The quota as a cap on the month's job counter, for a take of tokens that checks it in
    the same round trip (jobs.services.admission: the submit rate's bucket)."""
    day = (now or timezone.now()).astimezone(UTC).date()
    key, field = month_counter(tenant_id=tenant_id, day=day)
    limit = tenant_limits(tenant_id).jobs_per_month
    return CounterCap(key=key, field=field, limit=limit, amount=jobs)


def quota_refused(refused: CapReached, *, now: datetime | None = None) -> QuotaExceeded:
    """The QuotaExceeded for a take that quota_cap's cap refused."""
    now = (now or timezone.now()).astimezone(UTC)
    _, end = period_bounds(now)
    state = QuotaState(used=refused.used, quota=refused.cap.limit, period_end=end)
    return QuotaExceeded(state=state, wanted=refused.cap.amount, now=now)
