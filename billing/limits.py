"""The limits in force for a tenant: plan, scaled defaults, and an operator's overrides.

Where a job type's rate comes from, first match wins:
1. an operator's RateOverride for this tenant and this job type;
2. an operator's RateOverride for this tenant and every type (job_type blank);
3. the plan's `rate_overrides` for this type;
4. the type's default in CELERY_TASK_ANNOTATIONS (the seed's form: `{'demo.add':
   {'rate_limit': '10/s'}}`, `'*'` for every type), times the plan's `rate_multiplier`.
A burst (the bucket's size) is the override's, or the annotation's `burst`, or one second's
worth of the rate (at least 1).

Celery's own per-worker rate limits are off (CELERY_WORKER_DISABLE_RATE_LIMITS): these limits are
enforced per tenant across the cluster by jobs' dispatcher, which asks here. Answers are cached
per process for LIMITS_CACHE_SECONDS, so an operator's change takes effect within that. There is
no cross-process invalidation (such as a "limits version" key in Redis read once a second): it
would cut a bound of 2 s, shorter than an operator takes to look, to about 1 s, for a Redis read
per process and second and a second way for the bound to fail (a lost or stale version), and the
time-based bound must stay anyway for when Redis is down.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings

from billing.models import Plan, RateOverride, Subscription
from billing.rates import rate_per_second, rate_scale
from billing.selectors import DEFAULT_PLAN_SLUG, plan_get

LIMITS_CACHE_SECONDS = 2.0
FALLBACK_RATE = "10/s"


@dataclass(frozen=True)
class Rate:
    text: str  # Celery notation, as shown to tenants
    per_second: float
    burst: int

    @classmethod
    def parse(cls, text: str, burst: int | None = None) -> Rate:
        per_second = rate_per_second(text)
        return cls(
            text=text.strip(),
            per_second=per_second,
            burst=burst if burst else max(1, math.ceil(per_second)),
        )


@dataclass(frozen=True)
class TenantLimits:
    tenant_id: int
    plan: str
    weight: float
    concurrency: int
    submit_rate: Rate
    jobs_per_month: int
    schedules: int
    min_interval_seconds: int
    _plan_rates: dict[str, str] = field(repr=False)
    _multiplier: float = field(repr=False)
    _overrides: dict[str, tuple[str, int | None]] = field(repr=False)

    def rate_for(self, job_type: str) -> Rate:
        for key in (job_type, ""):
            if key in self._overrides:
                text, burst = self._overrides[key]
                return Rate.parse(text, burst)
        if job_type in self._plan_rates:
            return Rate.parse(self._plan_rates[job_type])
        default, burst = annotation_rate(job_type)
        return Rate.parse(rate_scale(default, self._multiplier), burst)

    def rates_for(self, job_types: Iterable[str]) -> dict[str, Rate]:
        return {name: self.rate_for(name) for name in job_types}


def annotation_rate(job_type: str) -> tuple[str, int | None]:
    """The type's default rate and burst from CELERY_TASK_ANNOTATIONS ('*' for every type)."""
    annotations: dict[str, dict[str, Any]] = getattr(settings, "CELERY_TASK_ANNOTATIONS", {})
    for key in (job_type, "*"):
        entry = annotations.get(key) or {}
        if entry.get("rate_limit"):
            return str(entry["rate_limit"]), entry.get("burst")
    return FALLBACK_RATE, None


_cache: dict[int, tuple[float, TenantLimits]] = {}
_cache_lock = threading.Lock()


def tenant_limits(tenant_id: int) -> TenantLimits:
    now = time.monotonic()
    hit = _cache.get(tenant_id)
    if hit is not None and hit[0] > now:
        return hit[1]
    limits = _load(tenant_id)
    with _cache_lock:
        _cache[tenant_id] = (now + LIMITS_CACHE_SECONDS, limits)
    return limits


def limits_cache_clear() -> None:
    with _cache_lock:
        _cache.clear()


def _load(tenant_id: int) -> TenantLimits:
    subscription = Subscription.objects.select_related("plan").filter(tenant_id=tenant_id).first()
    plan: Plan = subscription.plan if subscription else plan_get(slug=DEFAULT_PLAN_SLUG)
    overrides = {
        row.job_type: (row.rate, row.burst)
        for row in RateOverride.objects.filter(tenant_id=tenant_id)
    }
    concurrency = plan.concurrency
    submit_rate = plan.submit_rate
    submit_burst: int | None = None
    weight = plan.fairness_weight
    if subscription is not None:
        if subscription.concurrency_override is not None:
            concurrency = subscription.concurrency_override
        submit_rate = subscription.submit_rate_override or submit_rate
        submit_burst = subscription.submit_burst_override
        if subscription.fairness_weight_override is not None:
            weight = subscription.fairness_weight_override
    return TenantLimits(
        tenant_id=tenant_id,
        plan=plan.slug,
        weight=max(weight, 0.01),
        concurrency=concurrency,
        submit_rate=Rate.parse(submit_rate, submit_burst),
        jobs_per_month=plan.monthly_job_quota,
        schedules=plan.max_schedules,
        min_interval_seconds=plan.min_interval_seconds,
        _plan_rates=dict(plan.rate_overrides or {}),
        _multiplier=plan.rate_multiplier,
        _overrides=overrides,
    )
