"""Celery adapters (thin): one task per catalogue job type.

Each job type gets a task named after it (`demo.add`) that takes only the job id. (The
reconciler is not a task: it runs in every worker's main process, jobs.maintenance.) Naming tasks
after job types keeps the seed's habits working: `CELERY_TASK_ANNOTATIONS` keyed by task name,
Flower and the results admin showing `demo.add`. Tasks are `shared_task`s: this app never
imports the Celery app itself (the wiring's), it registers with whichever app loads it.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import Task, shared_task

from jobs.catalogue import JobType, catalogue
from jobs.runner import job_run_attempt


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


logger = logging.getLogger(__name__)

JOB_TASKS = {name: _register(job_type) for name, job_type in catalogue().items()}


@shared_task(name="jobs.retention_sweep", ignore_result=True)
def retention_sweep_task() -> None:
    """Periodic (CELERY_BEAT_SCHEDULE): finished jobs past their plan's retention deleted."""
    from jobs.retention import retention_sweep

    result = retention_sweep()
    logger.info("retention: %s", result)
