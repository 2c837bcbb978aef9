"""One Celery task per catalogue job type, named after it (`demo.add`), taking only the job id.

Naming tasks after job types keeps the seed's habits working: `CELERY_TASK_ANNOTATIONS` keyed by
task name, Flower and the results admin showing `demo.add`.
"""

from __future__ import annotations

from typing import Any

from celery import Task
from saas_platform.celery_app import app

from jobs import periodic  # noqa: F401  -- registers the platform's periodic tasks
from jobs.catalogue import JobType, catalogue
from jobs.runner import job_run_attempt


def _register(job_type: JobType) -> Task:  # type: ignore[type-arg]
    def run(self: Task, job_id: str) -> Any:  # type: ignore[type-arg]
        return job_run_attempt(self, job_id)

    run.__name__ = run.__qualname__ = job_type.name.replace(".", "_")
    run.__doc__ = job_type.description
    task: Task = app.task(  # type: ignore[type-arg]
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
