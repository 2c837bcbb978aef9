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
from datetime import datetime
from typing import Any

import redis
from saas_platform.lib.db import connection
from saas_platform.lib.rate_buckets import BucketSpec, buckets_take
from saas_platform.lib.state_redis import state_key, state_redis

from billing.limits import TenantLimits, tenant_limits
from jobs.catalogue import catalogue
from jobs.models import Job
from jobs.services.publishing import jobs_send
from jobs.services.transitions import job_fail_unsent

logger = logging.getLogger(__name__)

# Jobs of a turn per unit of fairness weight when other tenants wait too (a lone tenant's turn
# fills the room): small enough to interleave tenants finely, large enough to amortise a turn.
QUANTUM = 4
# A tenant at its concurrency cap is looked at again this soon (a slot frees when a job ends).
CAP_RECHECK_SECONDS = 0.25
# A suspended tenant is looked at again this soon (resuming it lets its jobs go).
SUSPENDED_RECHECK_SECONDS = 5.0

_CANDIDATES_SQL = """
SELECT id, task_id, type, queue, priority, time_limit_seconds, run_at FROM (
    (SELECT id, task_id, type, queue, priority, time_limit_seconds, run_at, created_at
       FROM jobs_job
      WHERE status = 'queued' AND published_at IS NULL AND queue = %(queue)s
        AND NOT (type = ANY(%(held_back)s))
      ORDER BY priority DESC, created_at, id
      LIMIT %(limit)s)
    UNION ALL
    (SELECT id, task_id, type, queue, priority, time_limit_seconds, run_at, run_at
       FROM jobs_job
      WHERE status = 'scheduled' AND run_at <= now() AND queue = %(queue)s
        AND NOT (type = ANY(%(held_back)s))
      ORDER BY run_at, id
      LIMIT %(limit)s)
) waiting
ORDER BY priority DESC, created_at, id
LIMIT %(limit)s
"""

# Sent from now on: `queued` with published_at. Conditional, so a job cancelled since the SELECT
# is not sent; `queued_at` for a scheduled job is when it came due.
_MARK_SENT_SQL = """
UPDATE jobs_job
   SET status = 'queued', published_at = now(),
       queued_at = CASE WHEN status = 'scheduled' THEN run_at ELSE queued_at END
 WHERE id = ANY(%(ids)s) AND published_at IS NULL AND status IN ('queued', 'scheduled')
RETURNING id
"""

_UNMARK_SQL = """
UPDATE jobs_job SET published_at = NULL WHERE id = ANY(%(ids)s) AND status = 'queued'
"""

_NEXT_DUE_SQL = """
SELECT min(run_at) FROM jobs_job WHERE status = 'scheduled' AND queue = %(queue)s
"""


@dataclass(frozen=True)
class TurnResult:
    sent: int = 0
    more: bool = False  # it may have more waiting now: serve it again
    look_again_at: float | None = None  # epoch: a token, a slot, or a run_at
    capped: bool = False
    rate_limited: dict[str, float] = field(default_factory=dict)  # type -> next token, epoch


def inflight_key(tenant_id: int) -> str:
    return state_key("inflight", tenant_id)


def bucket_spec(tenant_id: int, job_type: str, limits: TenantLimits) -> BucketSpec:
    rate = limits.rate_for(job_type)
    return BucketSpec(
        key=state_key("rate", tenant_id, job_type), rate=rate.per_second, burst=rate.burst
    )


def _rows(sql: str, params: dict[str, Any]) -> list[tuple[Any, ...]]:
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return list(cursor.fetchall()) if cursor.description else []


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


def _next_due(queue: str) -> float | None:
    rows = _rows(_NEXT_DUE_SQL, {"queue": queue})
    when: datetime | None = rows[0][0] if rows else None
    return when.timestamp() if when else None


def _without_unknown_types(candidates: list[Job]) -> list[Job]:
    """Fail the jobs of a type the catalogue no longer has (no worker could run them) and return
    the rest: left waiting, they would hold up the tenant's line for ever."""
    known = catalogue()
    unknown = [job for job in candidates if job.type not in known]
    for job in unknown:
        job_fail_unsent(job_id=str(job.id), error=f"the job type {job.type} no longer exists")
    return [job for job in candidates if job.type in known]


def tenant_dispatch_turn(*, tenant_id: int, queue: str, room: int, alone: bool) -> TurnResult:
    """Send up to `room` of the active tenant's waiting jobs for `queue`; see the module."""
    if not getattr(connection.tenant, "is_active", True):
        # Suspended: its jobs wait (their waiting_reason says so) until an operator resumes it.
        return TurnResult(look_again_at=time.time() + SUSPENDED_RECHECK_SECONDS)
    limits = tenant_limits(tenant_id)
    wanted = room if alone else min(room, max(1, round(QUANTUM * limits.weight)))
    client = state_redis()
    cap_room = limits.concurrency - int(client.scard(inflight_key(tenant_id)))
    if cap_room <= 0:
        return TurnResult(capped=True, look_again_at=time.time() + CAP_RECHECK_SECONDS)
    wanted = min(wanted, cap_room)
    held_back: dict[str, float] = {}
    chosen: list[Job] = []
    candidates: list[Job] = []
    # Twice at most: a type at its rate limit is left out of the second look, so that it does
    # not hold up the tenant's other job types behind it.
    for _ in range(2):
        candidates = [
            _job(row)
            for row in _rows(
                _CANDIDATES_SQL,
                {"queue": queue, "limit": wanted, "held_back": sorted(held_back)},
            )
        ]
        if not candidates:
            break
        candidates = _without_unknown_types(candidates)
        if not candidates:
            continue
        counts = Counter(job.type for job in candidates)
        types = sorted(counts)
        takes = buckets_take([(bucket_spec(tenant_id, t, limits), counts[t]) for t in types])
        granted = {t: take.granted for t, take in zip(types, takes, strict=True)}
        now = time.time()
        for job_type, take in zip(types, takes, strict=True):
            if take.granted < counts[job_type]:
                held_back[job_type] = now + max(take.next_token_in, 0.001)
        for job in candidates:
            if granted[job.type] > 0:
                granted[job.type] -= 1
                chosen.append(job)
        if chosen or not held_back:
            break
    if not chosen:
        if held_back:
            return TurnResult(look_again_at=min(held_back.values()), rate_limited=held_back)
        next_due = _next_due(queue)
        return TurnResult(look_again_at=next_due)
    marked = {row[0] for row in _rows(_MARK_SENT_SQL, {"ids": [job.id for job in chosen]})}
    chosen = [job for job in chosen if job.id in marked]
    if chosen:
        try:
            client.sadd(inflight_key(tenant_id), *[str(job.task_id) for job in chosen])
        except redis.RedisError as exc:
            logger.warning("in-flight jobs of tenant %s not counted: %s", tenant_id, exc)
    sent = set(jobs_send(chosen))
    unsent = [job.id for job in chosen if job.id not in sent]
    if unsent:
        # The broker is down: back to waiting, for a later turn (their tokens are spent).
        _rows(_UNMARK_SQL, {"ids": unsent})
        client.srem(
            inflight_key(tenant_id), *[str(job.task_id) for job in chosen if job.id in unsent]
        )
    more = len(candidates) >= wanted or bool(held_back)
    return TurnResult(
        sent=len(sent),
        more=more and not unsent,
        look_again_at=min(held_back.values()) if held_back and not more else None,
        rate_limited=held_back,
    )


def tenant_has_waiting(queue: str) -> bool:
    """Anything of the active tenant that may go to `queue` now."""
    return bool(_rows(_CANDIDATES_SQL, {"queue": queue, "limit": 1, "held_back": []}))
