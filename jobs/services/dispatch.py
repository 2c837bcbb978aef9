"""One tenant's turn at the broker: its next waiting jobs, admitted by its limits, sent.

Accepted jobs wait in their tenant's Job table (`queued` with no `published_at`, or `scheduled`
until `run_at`) and only the dispatcher (jobs.dispatcher) sends them, in the fair order of
jobs.fairness. A turn, with the tenant's schema active:
1. take the tenant's next waiting jobs of the queue, highest priority first, then oldest (due
   scheduled jobs among them);
2. admit them: no more than its concurrency cap allows (jobs sent and not yet ended, counted in
   Redis: `inflight:<tenant>`), and no more of each job type than that type's token bucket
   grants (billing.limits: the rate and burst in force for this tenant, cluster-wide);
3. mark the admitted ones sent (a conditional UPDATE: one cancelled meanwhile is skipped) and
   send them. A job over a limit stays where it is: never failed, never charged an attempt,
   never held by a worker where it would block other tenants' jobs (celery#8119).
The turn says what the dispatcher should do with the tenant next: serve it again, look again
when a token or a slot could be there, or drop it until it has work.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import redis
from saas_platform.lib import metrics
from saas_platform.lib.db import connection, rows_in_one_round_trip
from saas_platform.lib.rate_buckets import BucketSpec, buckets_take
from saas_platform.lib.state_redis import state_key, state_redis

from billing.limits import TenantLimits, tenant_limits
from jobs.catalogue import catalogue
from jobs.models import Job
from jobs.services.publishing import jobs_send

logger = logging.getLogger(__name__)

# Jobs of a turn per unit of fairness weight when other tenants wait too (a lone tenant's turn
# fills the room): small enough to interleave tenants finely, large enough to amortise a turn.
QUANTUM = 4
# A tenant at its concurrency cap is looked at again this soon (a slot frees when a job ends).
CAP_RECHECK_SECONDS = 0.25
# A suspended tenant is looked at again this soon (resuming it lets its jobs go).
SUSPENDED_RECHECK_SECONDS = 5.0

# One short index scan per job type that may go (job_waiting_idx: queue, type, priority DESC,
# created_at, id), merged: a type held back by its rate limit, or unknown to this worker's
# catalogue (a type added by a rolling deploy), is simply not asked for, so a million waiting
# jobs of one type never make the others' scan long. Due scheduled jobs come from their own
# index (queue, run_at).
_WAITING_BRANCH = """
    (SELECT id, task_id, type, queue, priority, time_limit_seconds, run_at, created_at AS line
       FROM jobs_job
      WHERE status = 'queued' AND published_at IS NULL AND queue = %(queue)s AND type = {type}
      ORDER BY priority DESC, created_at, id
      LIMIT %(limit)s)"""
_DUE_BRANCH = """
    (SELECT id, task_id, type, queue, priority, time_limit_seconds, run_at, run_at AS line
       FROM jobs_job
      WHERE status = 'scheduled' AND published_at IS NULL AND run_at <= now()
        AND queue = %(queue)s AND type = ANY(%(types)s)
      ORDER BY run_at, id
      LIMIT %(limit)s)"""


def _candidates_sql(type_count: int) -> str:
    # Only placeholders are formatted in: the values travel as parameters.
    branches = [_WAITING_BRANCH.format(type=f"%(type{n})s") for n in range(type_count)]
    return (
        "SELECT id, task_id, type, queue, priority, time_limit_seconds, run_at FROM ("  # noqa: S608
        + " UNION ALL ".join([*branches, _DUE_BRANCH])
        + ") waiting ORDER BY priority DESC, line, id LIMIT %(limit)s"
    )


# Sent from now on: `queued` with published_at. Conditional, so a job cancelled since the SELECT
# is not sent, and its task id read back, so that one retried meanwhile is sent under its new
# one; `queued_at` for a scheduled job is when it came due.
_MARK_SENT_SQL = """
UPDATE jobs_job
   SET status = 'queued', published_at = now(),
       queued_at = CASE WHEN status = 'scheduled' THEN run_at ELSE queued_at END
 WHERE id = ANY(%(ids)s) AND published_at IS NULL AND status IN ('queued', 'scheduled')
RETURNING id, task_id
"""

_UNMARK_SQL = """
UPDATE jobs_job SET published_at = NULL WHERE id = ANY(%(ids)s) AND status = 'queued'
"""

# In seconds from the database's own now(), so that a host whose clock is ahead does not wake
# up for a job that is not due yet by the clock the candidate query uses.
_NEXT_DUE_SQL = """
SELECT EXTRACT(EPOCH FROM min(run_at) - now()) FROM jobs_job
 WHERE status = 'scheduled' AND published_at IS NULL AND queue = %(queue)s
"""


@dataclass(frozen=True)
class TurnResult:
    sent: int = 0
    more: bool = False  # it may have more waiting now: serve it again
    # Keep the tenant out of `ready` until then (epoch): a rate limit's next token, a slot
    # re-check, a suspension re-check, a broker that refused the messages.
    set_aside_until: float | None = None
    next_due: float | None = None  # nothing waiting now; its next scheduled job is due then
    capped: bool = False
    rate_limited: dict[str, float] = field(default_factory=dict)  # type -> next token, epoch


def inflight_key(tenant_id: int) -> str:
    return state_key("inflight", tenant_id)


def bucket_spec(tenant_id: int, job_type: str, limits: TenantLimits) -> BucketSpec:
    rate = limits.rate_for(job_type)
    return BucketSpec(
        key=state_key("rate", tenant_id, job_type), rate=rate.per_second, burst=rate.burst
    )


def _rows(
    sql: str, params: dict[str, Any], *, synchronous_commit: bool = True, prepared: bool = False
) -> list[tuple[Any, ...]]:
    # A turn's first statement carries the tenant's search_path (one round trip, not two).
    return rows_in_one_round_trip(
        sql, params, synchronous_commit=synchronous_commit, prepared=prepared
    )


def _job(row: tuple[Any, ...]) -> Job:
    job_id, task_id, job_type, queue, priority, time_limit, run_at = row
    return Job(
        id=job_id,
        task_id=task_id,
        type=job_type,
        queue=queue,
        priority=priority,
        time_limit_seconds=time_limit,
        run_at=run_at,
    )


def _waiting(queue: str, limit: int, types: list[str]) -> list[Job]:
    if not types:
        return []
    params: dict[str, Any] = {"queue": queue, "limit": limit, "types": types}
    params.update({f"type{n}": job_type for n, job_type in enumerate(types)})
    # Prepared: its UNION of index scans took longer to plan than to run (about 1 ms a turn).
    return [_job(row) for row in _rows(_candidates_sql(len(types)), params, prepared=True)]


def _next_due(queue: str) -> float | None:
    rows = _rows(_NEXT_DUE_SQL, {"queue": queue})
    seconds = rows[0][0] if rows else None
    return time.time() + max(float(seconds), 0.05) if seconds is not None else None


def tenant_dispatch_turn(*, tenant_id: int, queue: str, room: int, alone: bool) -> TurnResult:
    """Send up to `room` of the active tenant's waiting jobs for `queue`; see the module."""
    if not getattr(connection.tenant, "is_active", True):
        # Suspended: its jobs wait (their waiting_reason says so) until an operator resumes it.
        return TurnResult(set_aside_until=time.time() + SUSPENDED_RECHECK_SECONDS)
    limits = tenant_limits(tenant_id)
    wanted = room if alone else min(room, max(1, round(QUANTUM * limits.weight)))
    client = state_redis()
    cap_room = limits.concurrency - int(client.scard(inflight_key(tenant_id)))
    if cap_room <= 0:
        return TurnResult(capped=True, set_aside_until=time.time() + CAP_RECHECK_SECONDS)
    wanted = min(wanted, cap_room)
    types = sorted(catalogue())
    held_back: dict[str, float] = {}
    chosen: list[Job] = []
    candidates: list[Job] = []
    # Twice at most: a type at its rate limit is left out of the second look, so that it does
    # not hold up the tenant's other job types behind it.
    for _ in range(2):
        candidates = _waiting(queue, wanted, [t for t in types if t not in held_back])
        if not candidates:
            break
        counts = Counter(job.type for job in candidates)
        asked = sorted(counts)
        takes = buckets_take([(bucket_spec(tenant_id, t, limits), counts[t]) for t in asked])
        granted = {t: take.granted for t, take in zip(asked, takes, strict=True)}
        now = time.time()
        for job_type, take in zip(asked, takes, strict=True):
            if take.granted < counts[job_type]:
                held_back[job_type] = now + max(take.next_token_in, 0.001)
        for job in candidates:
            if granted[job.type] > 0:
                granted[job.type] -= 1
                chosen.append(job)
        if chosen or not held_back:
            break
    for held_type in held_back:
        metrics.RATE_LIMIT_DEFERRALS.labels(held_type).inc()
    if not chosen:
        if held_back:
            return TurnResult(set_aside_until=min(held_back.values()), rate_limited=held_back)
        return TurnResult(next_due=_next_due(queue))
    # Not waiting for the WAL flush: a mark lost in a database crash only sends the job again
    # (the runner's claim lets one message run it), and the turn's messages go out sooner.
    marked = {
        row[0]: row[1]
        for row in _rows(
            _MARK_SENT_SQL, {"ids": [job.id for job in chosen]}, synchronous_commit=False
        )
    }
    chosen = [job for job in chosen if job.id in marked]
    for job in chosen:
        job.task_id = marked[job.id]
    if chosen:
        try:
            client.sadd(inflight_key(tenant_id), *[str(job.task_id) for job in chosen])
        except redis.RedisError as exc:
            logger.warning("in-flight jobs of tenant %s not counted: %s", tenant_id, exc)
    sent = set(jobs_send(chosen))
    unsent = [job for job in chosen if job.id not in sent]
    if unsent:
        # The broker is down: back to waiting, for a later turn a second from now (their
        # tokens are spent), rather than picked again at once.
        _rows(_UNMARK_SQL, {"ids": [job.id for job in unsent]})
        client.srem(inflight_key(tenant_id), *[str(job.task_id) for job in unsent])
        return TurnResult(sent=len(sent), set_aside_until=time.time() + 1.0)
    more = len(candidates) >= wanted
    return TurnResult(
        sent=len(sent),
        more=more,
        set_aside_until=min(held_back.values()) if held_back and not more else None,
        rate_limited=held_back,
    )


def tenant_has_waiting(queue: str) -> bool:
    """Anything of the active tenant that may go to `queue` now."""
    return bool(_waiting(queue, 1, sorted(catalogue())))
