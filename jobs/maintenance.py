"""The reconciler's passes, run by a thread in every worker's main process.

Why a thread there and not a task: a task would wait for a pool slot, and with every slot busy in
long jobs no rescue would ever run (nor would one run with no beat). The main process is never
busy with jobs, so this is capacity reserved for maintenance on every worker. Passes never
overlap: each takes a PostgreSQL advisory lock first, and a worker that finds it taken skips
its turn. A pass that should have completed and did not is logged (`reconcile_overdue_check`).

One pass (`reconcile_pass`):
1. look at the workers (worker_liveness): live reports, confirmed deaths;
2. put back on their queues the messages each dead incarnation held (lib.broker);
3. visit the tenants with unfinished work (jobs.services.activity), each in its own schema,
   and run jobs.services.reconciliation there; one tenant's failure does not stop the others;
4. forget the dead incarnations, and note the time of the pass.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

import redis
from celery.signals import worker_ready, worker_shutdown
from django.conf import settings
from django.db import DatabaseError, close_old_connections
from saas_platform.lib import metrics
from saas_platform.lib.broker import unacked_restore
from saas_platform.lib.db import connection
from saas_platform.lib.state_redis import state_key, state_redis
from saas_platform.lib.tenant_context import UnknownTenant, tenant_activated
from saas_platform.lib.worker_liveness import worker_forget

from jobs.services.activity import (
    full_sweep_done,
    tenant_forget,
    tenant_keep_or_drop,
    tenant_mark_active,
    tenants_to_visit,
)
from jobs.services.reconciliation import (
    WorkerView,
    tenant_has_unfinished_work,
    tenant_reconcile,
)
from jobs.services.results_expiry import results_expire
from jobs.services.workflows import workflows_advance_stranded

logger = logging.getLogger(__name__)

# pg_advisory_lock key: one reconcile pass at a time across every worker.
_PASS_LOCK = 0x7E4A18
_stop = threading.Event()


@dataclass
class PassReport:
    tenants: int = 0
    full_sweep: bool = False
    results_expired: int = 0
    steps_made: int = 0
    restored: int = 0
    announced: int = 0
    slots_repaired: int = 0
    rescued: int = 0
    lost: int = 0
    errors: int = 0
    seconds: float = 0.0


def _last_pass_key() -> str:
    return state_key("reconcile", "last-pass")


def _all_tenant_ids() -> list[int]:
    from tenants.models import Tenant

    # Suspended tenants included: work they had accepted still has to finish.
    # A purged tenant (deleted, schema dropped) has nothing left to reconcile.
    tenants = Tenant.objects.filter(is_template=False, purged_at__isnull=True)
    return list(tenants.values_list("pk", flat=True))


def _try_lock() -> bool:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_lock(%s)", [_PASS_LOCK])
        row = cursor.fetchone()
    return bool(row and row[0])


def _unlock() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_unlock(%s)", [_PASS_LOCK])


def reconcile_pass() -> PassReport | None:
    """One pass over every tenant with unfinished work; None if another pass holds the lock."""
    connection.set_schema_to_public()
    if not _try_lock():
        return None
    began = time.monotonic()
    report = PassReport()
    try:
        view = WorkerView.look()
        for incarnation in sorted(view.dead):
            report.restored += unacked_restore(incarnation)
        tenant_ids, report.full_sweep = tenants_to_visit(_all_tenant_ids)
        errored: list[int] = []
        for tenant_id in tenant_ids:
            try:
                with tenant_activated(tenant_id):
                    found = tenant_reconcile(view)
                    tenant_keep_or_drop(tenant_id, has_unfinished=tenant_has_unfinished_work)
                    if report.full_sweep:
                        # A full sweep visits every tenant anyway: results expire on the way,
                        # and chains stranded by an old worker's success get their next step.
                        report.results_expired += results_expire()
                        report.steps_made += workflows_advance_stranded()
            except UnknownTenant:
                # Deleted since it was marked: nothing of it is left to reconcile.
                tenant_forget(tenant_id)
                continue
            except (DatabaseError, redis.RedisError) as exc:
                # An outage, not a bug: a warning per pass, not a traceback (nor a Sentry event).
                errored.append(tenant_id)
                logger.warning("reconcile skipped tenant %s: %s", tenant_id, exc)
                continue
            except Exception:
                errored.append(tenant_id)
                logger.exception("reconcile failed for tenant %s", tenant_id)
                continue
            report.tenants += 1
            report.announced += found.announced
            report.slots_repaired += found.slots_repaired
            report.rescued += found.rescued
            report.lost += found.lost
            _count_rescues(found)
        report.errors = len(errored)
        for tenant_id in errored:
            # Visited again next pass even if the set had lost it; and one failing tenant does not
            # turn every later pass into a full sweep of all of them.
            with contextlib.suppress(redis.RedisError):
                tenant_mark_active(tenant_id)
        if report.full_sweep:
            full_sweep_done()
        # Dead ones seen while visiting tenants had nothing left in the broker to put back
        # before their jobs were requeued; only those confirmed at the start are forgotten.
        for incarnation in view.dead:
            worker_forget(incarnation)
        report.seconds = time.monotonic() - began
        state_redis().set(_last_pass_key(), str(time.time()))
    finally:
        try:
            _unlock()
        except DatabaseError:
            # The connection broke mid-pass; closing it (close_old_connections) drops the lock.
            logger.warning("could not release the reconcile lock; the connection is closed")
    if report.restored or report.rescued or report.lost or report.slots_repaired:
        logger.info("reconcile pass: %s", report)
    return report


def reconcile_overdue_check(now: float | None = None) -> float | None:
    """Seconds since the last completed pass when that is more than three intervals (logged as a
    warning), else None."""
    now = time.time() if now is None else now
    raw = state_redis().get(_last_pass_key())
    interval = settings.JOBS_RECONCILE_SECONDS
    if raw is None:
        return None  # no pass yet since this Redis started: the first one is on its way
    late = now - float(raw)
    if late <= 3 * interval:
        return None
    logger.warning(
        "no reconcile pass has completed for %.0f s (every %d s expected)", late, interval
    )
    return late


def _loop() -> None:
    interval = settings.JOBS_RECONCILE_SECONDS
    while not _stop.wait(interval):
        try:
            reconcile_pass()
            reconcile_overdue_check()
        except (redis.RedisError, OSError) as exc:
            logger.warning("reconcile pass failed (will try again): %s", exc)
        except Exception:
            logger.exception("reconcile pass failed (will try again)")
        finally:
            # This thread's own connection: replaced when broken or too old, as for tasks.
            close_old_connections()


@worker_ready.connect
def _start(**_: Any) -> None:
    _stop.clear()
    threading.Thread(target=_loop, name="jobs-reconciler", daemon=True).start()


@worker_shutdown.connect
def _end(**_: Any) -> None:
    _stop.set()


def _count_rescues(found: Any) -> None:
    """reconciler_rescues{kind}: what a pass put back, for dashboards and alerts."""
    for kind in ("rescued", "lost", "announced", "slots_repaired"):
        count = getattr(found, kind)
        if count:
            metrics.RECONCILER_RESCUES.labels(kind).inc(count)
