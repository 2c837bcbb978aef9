"""Which tenants' schedules changed since the beat last looked: a set in the state Redis.

The API adds the tenant after its change commits; the beat pops the set every tick and reloads
those tenants only, so noticing a change costs O(tenants that changed), not a query per schema per
tick (django-celery-beat's own check). If Redis loses the set, the beat's periodic full reload
(jobs.schedules.beat.FULL_RELOAD_SECONDS) still picks the change up.
"""

from __future__ import annotations

import logging

import redis
from django.db import transaction
from saas_platform.lib.state_redis import state_key, state_redis

logger = logging.getLogger(__name__)

# SPOP takes at most this many a call; the beat calls again while it gets a full batch.
_BATCH = 1000


def _key() -> str:
    return state_key("schedules", "changed")


def schedules_changed_on_commit(tenant_id: int) -> None:
    """Tell the beat after the caller's transaction commits (at once outside one)."""
    transaction.on_commit(lambda: schedules_changed(tenant_id))


def schedules_changed(tenant_id: int) -> None:
    try:
        state_redis().sadd(_key(), tenant_id)
    except redis.RedisError as exc:
        # The change is committed; the beat's next full reload sees it.
        logger.warning("schedule change of tenant %s not announced: %s", tenant_id, exc)


def changed_tenants_pop() -> set[int]:
    """The tenants announced since the last call (atomic: an add during the call is kept)."""
    client = state_redis()
    found: set[int] = set()
    while True:
        batch = client.spop(_key(), _BATCH)
        found.update(int(member) for member in batch or ())
        if not batch or len(batch) < _BATCH:
            return found
