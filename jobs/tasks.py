"""Celery adapters (thin): one task per catalogue job type, and the platform's periodic work.

Each job type gets a task named after it (`demo.add`) that takes only the job id. Naming tasks
after job types keeps the seed's habits working: `CELERY_TASK_ANNOTATIONS` keyed by task name,
Flower and the results admin showing `demo.add`. Tasks are `shared_task`s: this app never
imports the Celery app itself (the wiring's), it registers with whichever app loads it.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import Task, shared_task
from saas_platform.lib.tenant_context import tenant_activated

from jobs.catalogue import JobType, catalogue
from jobs.runner import job_run_attempt

logger = logging.getLogger(__name__)


def _register(job_type: JobType) -> Task:  # type: ignore[type-arg]
    def run(self: Task, job_id: str) -> Any:  # type: ignore[type-arg]
        return job_run_attempt(self, job_id)

    run.__name__ = run.__qualname__ = job_type.name.replace(".", "_")
    run.__doc__ = job_type.description
    task: Task = shared_task(  # type: ignore[type-arg]
        name=job_type.name,
        bind=True,
        queue=job_type.queue,
        time_limit=job_type.time_limit_seconds,
        acks_late=True,
        reject_on_worker_lost=True,
        typing=False,
    )(run)
    return task


JOB_TASKS = {name: _register(job_type) for name, job_type in catalogue().items()}


@shared_task(name="platform.jobs_reconcile", ignore_result=True, expires=60)
def jobs_reconcile() -> dict[str, int]:
    """Republish stranded jobs and release due scheduled jobs, tenant by tenant.

    One tenant's failure is logged and does not stop the others.
    """
    from jobs.services.reconciliation import tenant_reconcile
    from tenants.models import Tenant

    totals = {"tenants": 0, "republished": 0, "released": 0, "rescued": 0, "errors": 0}
    # Suspended tenants included: work they had accepted still has to finish.
    for tenant_id in Tenant.objects.filter(is_template=False).values_list("pk", flat=True):
        try:
            with tenant_activated(tenant_id):
                report = tenant_reconcile()
        except Exception:
            totals["errors"] += 1
            logger.exception("reconcile failed for tenant %s", tenant_id)
            continue
        totals["tenants"] += 1
        totals["republished"] += report.republished
        totals["released"] += report.released
        totals["rescued"] += report.rescued
    return totals
