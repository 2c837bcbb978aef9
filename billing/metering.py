"""Usage counters per tenant per UTC day, in Redis (DESIGN.md, "Billing").

`jobs` reports what it does here (jobs accepted, attempts run, seconds of run time); billing
never reads a Job row. A count is one pipelined round trip to the state Redis and never a write
to the public schema. Keys:

- `usage:<tenant id>:<YYYY-MM-DD>`: a hash of the day's `jobs`, `attempts`, `run_ms` (whole
  milliseconds, so sums stay exact) and `seq`, which every count raises by one. The roll-up
  (billing.rollup) copies the absolute values with their `seq` into UsageDay, so copying twice
  changes nothing and an older copy never overwrites a newer one.
- `usage:dirty`: the set of `<tenant id>:<day>` counted since their last roll-up; the roll-up
  visits only these, so it costs O(active tenants), never O(all tenants).
- `usage:<tenant id>:m:<YYYY-MM>`: the month's jobs, one HGET for the quota check at submission
  instead of summing up to 31 day hashes.
- `usage:attempts:<epoch minute>`: attempts ended per minute over all tenants (the health view's
  jobs per minute), and `usage:failures:<epoch hour>`, a sorted set of failures per tenant.

The day of a count is the UTC day of the moment it happens: a job finishing at 23:59:59.9 on a
month's last day is that month's. Counting must never refuse work: if Redis is unreachable the
count is logged and dropped (the job itself is accepted or recorded as usual). BILLING_METERING
off (a benchmark's baseline) counts nothing.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

import redis
from django.conf import settings
from django.utils import timezone
from saas_platform.lib.state_redis import state_key, state_redis

logger = logging.getLogger(__name__)

# Longer than any billing period plus the time an invoice may take to close.
USAGE_TTL = timedelta(days=400)
# The health view looks back an hour at most.
STATS_TTL = timedelta(hours=3)


@dataclass(frozen=True)
class UsageTotals:
    jobs: int = 0
    attempts: int = 0
    run_seconds: float = 0.0


def day_key(tenant_id: int, day: date) -> str:
    return state_key("usage", tenant_id, day.isoformat())


def month_key(tenant_id: int, day: date) -> str:
    return state_key("usage", tenant_id, "m", day.strftime("%Y-%m"))


def dirty_key() -> str:
    return state_key("usage", "dirty")


def attempts_minute_key(minute: int) -> str:
    return state_key("usage", "attempts", minute)


def failures_hour_key(hour: int) -> str:
    return state_key("usage", "failures", hour)


def usage_count(
    *,
    tenant_id: int,
    jobs: int = 0,
    attempts: int = 0,
    run_seconds: float = 0.0,
    failed: bool = False,
    at: datetime | None = None,
    pipe: redis.client.Pipeline | None = None,
) -> None:
    """Add to the tenant's counters for the UTC day of `at` (now by default).

    With `pipe`, the commands join the caller's pipeline (one round trip for several updates on
    a hot path) and the caller executes it; without, they are sent here, and a Redis failure is
    logged and dropped. `failed`: the attempt ended the job as failed (the health view's
    failures per tenant).
    """
    if not settings.BILLING_METERING:
        return
    moment = (at or timezone.now()).astimezone(UTC)
    day = moment.date()
    key = day_key(tenant_id, day)
    target = pipe if pipe is not None else state_redis().pipeline(transaction=False)
    if jobs:
        target.hincrby(key, "jobs", jobs)
        target.hincrby(month_key(tenant_id, day), "jobs", jobs)
        target.expire(month_key(tenant_id, day), USAGE_TTL)
    if attempts:
        target.hincrby(key, "attempts", attempts)
        minute = attempts_minute_key(int(moment.timestamp()) // 60)
        target.incrby(minute, attempts)
        target.expire(minute, STATS_TTL)
    if run_seconds:
        target.hincrby(key, "run_ms", round(run_seconds * 1000))
    if failed:
        hour = failures_hour_key(int(moment.timestamp()) // 3600)
        target.zincrby(hour, 1, str(tenant_id))
        target.expire(hour, STATS_TTL)
    target.hincrby(key, "seq", 1)
    target.expire(key, USAGE_TTL)
    target.sadd(dirty_key(), f"{tenant_id}:{day.isoformat()}")
    if pipe is not None:
        return
    try:
        target.execute()
    except redis.RedisError as exc:
        logger.warning("usage of tenant %s not counted (%s): %s", tenant_id, key, exc)


def month_jobs(*, tenant_id: int, day: date) -> int:
    """Jobs counted in the month of `day` so far (the quota check). Raises redis.RedisError."""
    value = state_redis().hget(month_key(tenant_id, day), "jobs")
    return int(value) if value else 0


def usage_between(*, tenant_id: int, start: date, end: date) -> UsageTotals:
    """The tenant's totals over the UTC days [start, end)."""
    days = [start + timedelta(days=n) for n in range((end - start).days)]
    pipe = state_redis().pipeline(transaction=False)
    for day in days:
        pipe.hgetall(day_key(tenant_id, day))
    jobs = attempts = run_ms = 0
    for counters in pipe.execute():
        jobs += int(counters.get(b"jobs", 0))
        attempts += int(counters.get(b"attempts", 0))
        run_ms += int(counters.get(b"run_ms", 0))
    return UsageTotals(jobs=jobs, attempts=attempts, run_seconds=run_ms / 1000)
