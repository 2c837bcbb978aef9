"""Which tenants have unfinished work (the reconciler visits those and no others), and telling
the dispatcher and the reconciler about newly waiting jobs.

A set in the state Redis. Submission adds the tenant after its jobs commit; the reconciler
removes a tenant once a pass finds nothing of it unfinished, then looks once more, so a job
committed meanwhile puts it straight back (a submission adds after its commit: if that add came
before the removal, the second look sees the job).

If Redis loses the set (a flush, a failover, an eviction), the sentinel key written beside it
is lost too and the next pass visits every tenant to rebuild both; every FULL_SWEEP_SECONDS
it does so anyway, as a backstop.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence

import redis
from django.db import transaction
from saas_platform.lib.state_redis import state_key, state_redis

from billing.metering import usage_count
from jobs.fairness import tenant_mark_ready
from jobs.models import Job, JobStatus

logger = logging.getLogger(__name__)

FULL_SWEEP_SECONDS = 600


def _set_key() -> str:
    return state_key("active-tenants")


def _sentinel_key() -> str:
    return state_key("active-tenants", "swept-at")


def tenant_mark_active(tenant_id: int, *, pipe: redis.client.Pipeline | None = None) -> None:
    """With `pipe`, joins the caller's pipeline; else sent now, a Redis failure logged (the job is
    accepted all the same; the next full sweep finds the tenant)."""
    if pipe is not None:
        pipe.sadd(_set_key(), tenant_id)
        return
    try:
        state_redis().sadd(_set_key(), tenant_id)
    except redis.RedisError as exc:
        logger.warning("tenant %s not marked active: %s", tenant_id, exc)


def tenants_to_visit(all_tenant_ids: Callable[[], list[int]]) -> tuple[list[int], bool]:
    """The tenants a pass visits, and whether that is every tenant (a full sweep).

    A full sweep when the sentinel is missing (the set may have been lost) or older than
    FULL_SWEEP_SECONDS; it rewrites the set from scratch as it goes (tenant_keep_or_drop).
    """
    client = state_redis()
    swept_at = client.get(_sentinel_key())
    if swept_at is None or time.time() - float(swept_at) > FULL_SWEEP_SECONDS:
        return all_tenant_ids(), True
    members: set[bytes] = client.smembers(_set_key())  # type: ignore[assignment]
    return sorted(int(member) for member in members), False


def tenant_forget(tenant_id: int) -> None:
    """A deleted tenant leaves the set."""
    state_redis().srem(_set_key(), tenant_id)


def full_sweep_done() -> None:
    state_redis().set(_sentinel_key(), str(time.time()))


def tenant_keep_or_drop(tenant_id: int, *, has_unfinished: Callable[[], bool]) -> bool:
    """Keep the tenant in the set while it has unfinished work; returns whether it stays."""
    client = state_redis()
    if has_unfinished():
        client.sadd(_set_key(), tenant_id)
        return True
    client.srem(_set_key(), tenant_id)
    if has_unfinished():  # committed between the first look and the removal
        client.sadd(_set_key(), tenant_id)
        return True
    return False


def _wakeups(jobs: Sequence[Job]) -> dict[str, float]:
    """Per queue, when the earliest of these jobs may go (epoch seconds; 0: now)."""
    due: dict[str, float] = {}
    for job in jobs:
        when = job.run_at.timestamp() if job.status == JobStatus.SCHEDULED and job.run_at else 0.0
        due[job.queue] = min(due.get(job.queue, when), when)
    return due


def jobs_announce_on_commit(tenant_id: int, jobs: Sequence[Job], *, bill: bool) -> None:
    """After the commit only (a rolled-back write wakes nobody and is not billed): tell the
    dispatcher and the reconciler that the tenant has these jobs waiting.

    One pipelined round trip: bill the jobs (`bill`: new submissions), mark the tenant as having
    unfinished work (for the reconciler) and ready for the dispatcher. If Redis is unreachable
    the jobs wait in the table all the same, and the reconciler announces them once it can.
    """
    tenants_jobs_announce_on_commit({tenant_id: jobs}, bill=bill)


def tenants_jobs_announce_on_commit(by_tenant: Mapping[int, Sequence[Job]], *, bill: bool) -> None:
    """jobs_announce_on_commit for several tenants' jobs written in one transaction (the beat's
    occurrences of many tenants): still one round trip."""

    def announce() -> None:
        pipe = state_redis().pipeline(transaction=False)
        for tenant_id, jobs in by_tenant.items():
            if not jobs:
                continue
            if bill:
                usage_count(tenant_id=tenant_id, jobs=len(jobs), pipe=pipe)
            tenant_mark_active(tenant_id, pipe=pipe)
            # Read at commit, not now: the queue is the job's as committed.
            for queue, due in _wakeups(jobs).items():
                tenant_mark_ready(tenant_id, queue, due=due, pipe=pipe)
        try:
            pipe.execute()
        except redis.RedisError as exc:
            tenants = ", ".join(map(str, by_tenant))
            logger.warning("waiting jobs of tenant %s not announced: %s", tenants, exc)

    transaction.on_commit(announce)
