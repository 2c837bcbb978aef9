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

from jobs import worker_control  # noqa: F401  (registers the job_stop control command)
from jobs.catalogue import JobType, catalogue
from jobs.runner import job_run_attempt


def _register(job_type: JobType) -> Task:  # type: ignore[type-arg]
    def run(self: Task, job_id: str) -> Any:  # type: ignore[type-arg]
        return job_run_attempt(self, job_id)

    run.__name__ = run.__qualname__ = job_type.name.replace(".", "_")
    run.__doc__ = job_type.description
    # The seed's task options, per job type. ignore_result: no result row on success (the runner
    # records it on the Job row); the ends only Celery's main process sees (hard time limit, lost
    # worker) are still stored, as they are how the Job row learns of them (jobs.results_backend).
    # celery-types declares soft_time_limit as int, where Celery takes None for "no soft limit".
    task: Task = shared_task(  # type: ignore[type-arg, call-overload]
        name=job_type.name,
        bind=True,
        queue=job_type.queue,
        time_limit=job_type.time_limit_seconds,
        acks_late=True,
        reject_on_worker_lost=True,
        typing=False,
        ignore_result=job_type.ignore_result,
        store_errors_even_if_ignored=True,
        soft_time_limit=job_type.soft_time_limit_seconds,
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
