"""Usage counters per tenant per UTC day, in Redis (DESIGN.md, "Billing").

`jobs` reports what it does here (jobs accepted, attempts run, seconds of run time); billing
never reads a Job row. A count is one pipelined round trip to the state Redis and never a write
to the public schema. A day's counters live in one hash, `usage:<tenant id>:<YYYY-MM-DD>`, with
run time in whole milliseconds so that sums stay exact. The metering issue rolls these up into
billing tables; until then they expire after USAGE_TTL.

Counting must never refuse work: if Redis is unreachable the count is logged and dropped (the
job itself is accepted or recorded as usual).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

import redis
from django.utils import timezone
from saas_platform.lib.state_redis import state_key, state_redis

logger = logging.getLogger(__name__)

# Longer than any billing period plus the time an invoice may take to close.
USAGE_TTL = timedelta(days=400)


@dataclass(frozen=True)
class UsageTotals:
    jobs: int = 0
    attempts: int = 0
    run_seconds: float = 0.0


def _day_key(tenant_id: int, day: date) -> str:
    return state_key("usage", tenant_id, day.isoformat())


def usage_count(
    *,
    tenant_id: int,
    jobs: int = 0,
    attempts: int = 0,
    run_seconds: float = 0.0,
    at: datetime | None = None,
    pipe: redis.client.Pipeline | None = None,
) -> None:
    """Add to the tenant's counters for the UTC day of `at` (now by default).

    With `pipe`, the commands join the caller's pipeline (one round trip for several updates on
    a hot path) and the caller executes it; without, they are sent here, and a Redis failure is
    logged and dropped.
    """
    day = (at or timezone.now()).astimezone(UTC).date()
    key = _day_key(tenant_id, day)
    target = pipe if pipe is not None else state_redis().pipeline(transaction=False)
    if jobs:
        target.hincrby(key, "jobs", jobs)
    if attempts:
        target.hincrby(key, "attempts", attempts)
    if run_seconds:
        target.hincrby(key, "run_ms", round(run_seconds * 1000))
    target.expire(key, USAGE_TTL)
    if pipe is not None:
        return
    try:
        target.execute()
    except redis.RedisError as exc:
        logger.warning("usage of tenant %s not counted (%s): %s", tenant_id, key, exc)


def usage_between(*, tenant_id: int, start: date, end: date) -> UsageTotals:
    """The tenant's totals over the UTC days [start, end)."""
    days = [start + timedelta(days=n) for n in range((end - start).days)]
    pipe = state_redis().pipeline(transaction=False)
    for day in days:
        pipe.hgetall(_day_key(tenant_id, day))
    jobs = attempts = run_ms = 0
    for counters in pipe.execute():
        jobs += int(counters.get(b"jobs", 0))
        attempts += int(counters.get(b"attempts", 0))
        run_ms += int(counters.get(b"run_ms", 0))
    return UsageTotals(jobs=jobs, attempts=attempts, run_seconds=run_ms / 1000)
