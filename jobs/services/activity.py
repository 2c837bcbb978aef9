"""Which tenants have unfinished work: the reconciler visits those and no others.

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
from collections.abc import Callable

import redis
from saas_platform.lib.state_redis import state_key, state_redis

logger = logging.getLogger(__name__)

FULL_SWEEP_SECONDS = 600


def _set_key() -> str:
    return state_key("active-tenants")


def _sentinel_key() -> str:
    return state_key("active-tenants", "swept-at")


def tenant_mark_active(tenant_id: int) -> None:
    try:
        state_redis().sadd(_set_key(), tenant_id)
    except redis.RedisError as exc:
        # The job is accepted all the same; the next full sweep finds the tenant.
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
