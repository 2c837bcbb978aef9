"""Periodic platform tasks of billing (thin adapters; the schedule is CELERY_BEAT_SCHEDULE).

Both run in the public schema and never overlap themselves across the cluster: a Redis lock,
released when done and expiring on its own if its holder dies.
"""

from __future__ import annotations

import logging

from celery import shared_task
from saas_platform.lib.state_redis import state_key, state_redis

from billing.invoices import invoices_close
from billing.rollup import usage_rollup

logger = logging.getLogger(__name__)

LOCK_SECONDS = 600


@shared_task(name="billing.usage_rollup", ignore_result=True)
def usage_rollup_task() -> None:
    lock = state_redis().lock(state_key("lock", "usage_rollup"), timeout=LOCK_SECONDS)
    if not lock.acquire(blocking=False):
        return  # another worker is rolling up; its run covers this one's
    try:
        result = usage_rollup()
        logger.info("usage roll-up: %s", result)
    finally:
        lock.release()


@shared_task(name="billing.invoices_close", ignore_result=True)
def invoices_close_task() -> None:
    lock = state_redis().lock(state_key("lock", "invoices_close"), timeout=LOCK_SECONDS)
    if not lock.acquire(blocking=False):
        return
    try:
        # Drafts first, from the latest roll-up, so that a closing invoice has every late count.
        usage_rollup()
        logger.info("invoices closed: %s", invoices_close())
    finally:
        lock.release()
