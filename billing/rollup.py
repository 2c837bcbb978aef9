"""Roll the Redis usage counters (billing.metering) up into UsageDay and UsageMonth.

A periodic platform task (billing.tasks.usage_rollup) and `manage.py usage_rollup` call
`usage_rollup`. It visits only the tenant-days counted since their last roll-up (the
`usage:dirty` set), so it costs O(active tenants), and it is idempotent: killed at any point
and run again, it neither loses nor doubles a count.

Steps, per batch of dirty tenant-days:
1. Read each day's hash (absolute totals and its `seq`) in one pipelined round trip.
2. In one transaction, upsert UsageDay with those values where the stored `seq` is lower (a
   re-run writes nothing new; a slower, older roll-up never overwrites a newer one), then
   rewrite the affected UsageMonth rows as the sums of their days.
3. After the commit, take each tenant-day off the dirty set only if its `seq` is still the one
   written (a Lua script, atomic in Redis): a count that arrived meanwhile keeps it dirty.
Killed before 3 commits, the batch is rolled back and still dirty; killed after, a re-run finds
the same `seq` stored and writes nothing. Counts never decrease in a roll-up: copying absolute
values is what makes a repeat harmless.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

from django.db import transaction
from django.utils import timezone
from saas_platform.lib.db import connection
from saas_platform.lib.state_redis import state_redis

from billing.metering import day_key, dirty_key
from tenants.models import Tenant

logger = logging.getLogger(__name__)

BATCH_SIZE = 500

# Takes a tenant-day off the dirty set if its hash's seq is still the one rolled up.
# KEYS[1]: dirty set; then pairs ARGV (member, seq) with KEYS[2..] the day hashes.
_CLEAN_SCRIPT = """
local cleaned = 0
for i = 2, #KEYS do
  local seq = redis.call('HGET', KEYS[i], 'seq')
  if (not seq) or seq == ARGV[(i - 1) * 2] then
    cleaned = cleaned + redis.call('SREM', KEYS[1], ARGV[(i - 1) * 2 - 1])
  end
end
return cleaned
"""

_UPSERT_DAYS = """
INSERT INTO billing_usageday (tenant_id, day, jobs, attempts, run_ms, seq, rolled_up_at)
VALUES {values}
ON CONFLICT (tenant_id, day) DO UPDATE SET
    jobs = EXCLUDED.jobs, attempts = EXCLUDED.attempts, run_ms = EXCLUDED.run_ms,
    seq = EXCLUDED.seq, rolled_up_at = EXCLUDED.rolled_up_at
WHERE billing_usageday.seq < EXCLUDED.seq
"""

_REWRITE_MONTHS = """
INSERT INTO billing_usagemonth (tenant_id, month, jobs, attempts, run_ms, rolled_up_at)
SELECT d.tenant_id, date_trunc('month', d.day)::date, sum(d.jobs), sum(d.attempts),
       sum(d.run_ms), %s
FROM billing_usageday d
JOIN (VALUES {values}) AS m(tenant_id, month)
  ON d.tenant_id = m.tenant_id AND d.day >= m.month AND d.day < m.month + interval '1 month'
GROUP BY d.tenant_id, date_trunc('month', d.day)
ON CONFLICT (tenant_id, month) DO UPDATE SET
    jobs = EXCLUDED.jobs, attempts = EXCLUDED.attempts, run_ms = EXCLUDED.run_ms,
    rolled_up_at = EXCLUDED.rolled_up_at
"""


@dataclass(frozen=True)
class DayCounters:
    member: str  # "<tenant id>:<YYYY-MM-DD>", as in the dirty set
    tenant_id: int
    day: date
    jobs: int
    attempts: int
    run_ms: int
    seq: int


@dataclass
class RollupResult:
    visited: int = 0  # tenant-days read
    written: int = 0  # UsageDay rows inserted or changed
    cleaned: int = 0  # tenant-days taken off the dirty set
    dropped: int = 0  # tenant-days of tenants that no longer exist


def _parse_member(member: str) -> tuple[int, date] | None:
    tenant, _, day = member.partition(":")
    try:
        return int(tenant), date.fromisoformat(day)
    except ValueError:
        return None


def _dirty_batches(batch_size: int) -> Iterator[list[str]]:
    # SSCAN, not SMEMBERS: a large set is read in steps. A member may come twice (SSCAN's
    # promise, made likely by our own SREMs shrinking the set mid-scan): twice in one batch
    # would upsert a row twice in one statement, which PostgreSQL refuses, so a batch holds a
    # member once; twice in two batches is harmless (the second copy writes nothing).
    batch: dict[str, None] = {}
    for raw in state_redis().sscan_iter(dirty_key(), count=batch_size):
        batch[raw.decode() if isinstance(raw, bytes) else str(raw)] = None
        if len(batch) >= batch_size:
            yield list(batch)
            batch = {}
    if batch:
        yield list(batch)


def _read(members: Sequence[str]) -> tuple[list[DayCounters], list[str]]:
    parsed = [(m, _parse_member(m)) for m in members]
    bad = [m for m, p in parsed if p is None]
    good = [(m, p) for m, p in parsed if p is not None]
    pipe = state_redis().pipeline(transaction=False)
    for _, (tenant_id, day) in good:
        pipe.hgetall(day_key(tenant_id, day))
    counters: list[DayCounters] = []
    for (member, (tenant_id, day)), values in zip(good, pipe.execute(), strict=True):
        counters.append(
            DayCounters(
                member=member,
                tenant_id=tenant_id,
                day=day,
                jobs=int(values.get(b"jobs", 0)),
                attempts=int(values.get(b"attempts", 0)),
                run_ms=int(values.get(b"run_ms", 0)),
                seq=int(values.get(b"seq", 0)),
            )
        )
    return counters, bad


def _write(counters: Sequence[DayCounters]) -> int:
    now = timezone.now()
    params: list[Any] = []
    for c in counters:
        params += [c.tenant_id, c.day, c.jobs, c.attempts, c.run_ms, c.seq, now]
    values = ", ".join(["(%s, %s, %s, %s, %s, %s, %s)"] * len(counters))
    months = sorted({(c.tenant_id, c.day.replace(day=1)) for c in counters})
    month_params: list[Any] = [now]
    for tenant_id, month in months:
        month_params += [tenant_id, month]
    month_values = ", ".join(["(%s::bigint, %s::date)"] * len(months))
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(_UPSERT_DAYS.format(values=values), params)
        written: int = cursor.rowcount
        cursor.execute(_REWRITE_MONTHS.format(values=month_values), month_params)
    return written


def _clean(pairs: Sequence[tuple[str, int, int, date]]) -> int:
    """Take (member, seq) off the dirty set where the hash's seq is still `seq`."""
    if not pairs:
        return 0
    keys = [dirty_key()] + [day_key(tenant_id, day) for _, _, tenant_id, day in pairs]
    args: list[str] = []
    for member, seq, _, _ in pairs:
        args += [member, str(seq)]
    return int(state_redis().eval(_CLEAN_SCRIPT, len(keys), *keys, *args))


def usage_rollup(
    *, batch_size: int = BATCH_SIZE, after_batch: Callable[[int], None] | None = None
) -> RollupResult:
    """Roll every dirty tenant-day up (the steps are in the module docstring).

    `after_batch(n)` is called after batch n (from 1) has committed and been cleaned: a
    progress report for the command, and where a test stops a roll-up half-way.
    """
    connection.set_schema_to_public()
    result = RollupResult()
    for number, members in enumerate(_dirty_batches(batch_size), start=1):
        counters, bad = _read(members)
        known = set(
            Tenant.objects.filter(id__in={c.tenant_id for c in counters}).values_list(
                "id", flat=True
            )
        )
        gone = [c for c in counters if c.tenant_id not in known]
        live = [c for c in counters if c.tenant_id in known]
        if live:
            result.written += _write(live)
        result.visited += len(counters)
        result.cleaned += _clean([(c.member, c.seq, c.tenant_id, c.day) for c in live])
        # A deleted tenant's counts have nowhere to go; an unreadable member is not ours.
        if gone or bad:
            state_redis().srem(dirty_key(), *[c.member for c in gone], *bad)
            result.dropped += len(gone) + len(bad)
            logger.warning("usage of %d unknown tenant-days dropped", len(gone) + len(bad))
        if after_batch is not None:
            after_batch(number)
    return result
