"""Job status transitions. Each is a conditional UPDATE; 0 rows means another actor got there
first (the job was cancelled, retried, or already ended) and the caller backs off.

Worker side: claim, succeed (with the result row), requeue for a retry, fail, progress, and the
ends only Celery's main process sees. User side: cancel and retry.
"""

from __future__ import annotations

import json
import logging
import os
import uuid
from dataclasses import dataclass
from typing import Any

from celery import current_app, states
from django.db import transaction
from django.db.models.functions import Now
from kombu.exceptions import OperationalError as KombuOperationalError
from redis.exceptions import RedisError
from saas_platform.lib.db import connection
from saas_platform.lib.worker_liveness import current_incarnation

from jobs.models import FINAL_STATUSES, Job, JobStatus
from jobs.services.publishing import jobs_publish_on_commit
from jobs.services.submission import JobSubmitError

logger = logging.getLogger(__name__)

_MAX_ERROR_CHARS = 10_000


@dataclass(frozen=True)
class ClaimedJob:
    type: str
    args: dict[str, Any]
    attempts: int
    max_attempts: int


# One round trip: claim the job for this attempt and read what is needed to run it. A message
# whose task id is not the job's current one is stale (the job was cancelled or retried).
# "running" is claimable only by a redelivered message (the broker requeued it because the
# previous attempt's worker was lost); a mere duplicate of a running job's message is refused.
_CLAIM_SQL = """
UPDATE jobs_job
   SET status = 'running', attempts = attempts + 1, started_at = now(), finished_at = NULL,
       worker = %s, ran_in_schema = current_schema()
 WHERE id = %s AND task_id = %s AND (status = 'queued' OR (status = 'running' AND %s))
RETURNING type, args, attempts, max_attempts
"""


def job_claim(
    *, job_id: str, task_id: str, worker: str | None = None, redelivered: bool = False
) -> ClaimedJob | None:
    """`worker`: the claiming worker's incarnation (saas_platform.lib.worker_liveness); the job
    records "<incarnation>:<pid>" (the pid is read per call: pool children fork after import)."""
    where = f"{worker or current_incarnation()}:{os.getpid()}"
    with connection.cursor() as cursor:
        cursor.execute(_CLAIM_SQL, [where, job_id, task_id, redelivered])
        row = cursor.fetchone()
    if row is None:
        return None
    job_type, args, attempts, max_attempts = row
    if isinstance(args, str):
        # Django registers psycopg's jsonb loader as text (JSONField decodes it), so raw SQL sees
        # the JSON document as a string.
        args = json.loads(args)
    return ClaimedJob(type=job_type, args=args, attempts=attempts, max_attempts=max_attempts)


def job_fail(*, job_id: str, task_id: str, error: str) -> bool:
    return bool(
        Job.objects.filter(id=job_id, task_id=task_id)
        .exclude(status__in=FINAL_STATUSES)
        .update(status=JobStatus.FAILED, error=error[:_MAX_ERROR_CHARS], finished_at=Now())
    )


def job_requeue_for_retry(*, job_id: str, task_id: str, error: str) -> bool:
    """Back to queued after a failed attempt that will be retried (same task id)."""
    return bool(
        Job.objects.filter(id=job_id, task_id=task_id, status=JobStatus.RUNNING).update(
            status=JobStatus.QUEUED, error=error[:_MAX_ERROR_CHARS]
        )
    )


def job_requeue_rescued(*, job_id: str, task_id: str, worker: str, reason: str) -> bool:
    """Back to queued, under a new task id, a running job whose attempt was lost (its worker died,
    or ended it without recording the end). Conditional on the same attempt: if the job moved on
    meanwhile, it is left be."""
    return bool(
        Job.objects.filter(
            id=job_id, task_id=task_id, status=JobStatus.RUNNING, worker=worker
        ).update(
            status=JobStatus.QUEUED,
            task_id=uuid.uuid4(),
            published_at=None,
            worker="",
            error=reason[:_MAX_ERROR_CHARS],
        )
    )


def job_report_progress(*, job_id: str, task_id: str, progress: dict[str, Any]) -> None:
    Job.objects.filter(id=job_id, task_id=task_id, status=JobStatus.RUNNING).update(
        progress=progress
    )


def job_record_ended_outside_task(*, task_id: str, status: str, error: str) -> None:
    """Called by the results backend for FAILURE/REVOKED, inside the tenant's schema.

    Covers the ends a task cannot record itself: hard time limit, lost worker, revoked before
    running. A job the task already ended is left as it is.
    """
    final = JobStatus.CANCELLED if status == states.REVOKED else JobStatus.FAILED
    Job.objects.filter(task_id=task_id).exclude(status__in=FINAL_STATUSES).update(
        status=final, error=error[:_MAX_ERROR_CHARS], finished_at=Now()
    )


# Recording a job's success: the Job row and its result row in one statement, one commit. Called
# by the results backend (jobs.results_backend) when a job's task succeeded, with the tenant
# active. django-celery-results alone would take a SELECT and an INSERT in a transaction of its
# own, after the task's own Job UPDATE: five round trips and two commits per job. Measured
# (bench.variants, 2 cores): the tenant path went from 61% to 89% of a tuned plain Celery
# baseline with this. It also makes the two rows agree: a job reads `succeeded` exactly when its
# result row exists. The INSERT writes the same columns, with the same values, as
# django-celery-results' TaskResultManager.store_result (tests/test_job_success.py compares
# them); pyproject pins that package's minor version because this statement depends on its table.
_SUCCESS_SQL = """
WITH done AS (
    UPDATE jobs_job
       SET status = 'succeeded', result = %(result)s::jsonb, error = '', finished_at = now()
     WHERE id = %(job_id)s AND task_id = %(task_id)s AND status = 'running'
)
INSERT INTO django_celery_results_taskresult
    (task_id, periodic_task_name, task_name, task_args, task_kwargs, status, worker,
     content_type, content_encoding, result, date_created, date_started, date_done,
     traceback, meta)
VALUES (%(task_id)s, %(periodic_task_name)s, %(task_name)s, %(task_args)s, %(task_kwargs)s,
        'SUCCESS', %(worker)s, %(content_type)s, %(content_encoding)s, %(result)s, now(), NULL,
        now(), NULL, %(meta)s)
ON CONFLICT (task_id) DO UPDATE SET
    periodic_task_name = EXCLUDED.periodic_task_name, task_name = EXCLUDED.task_name,
    task_args = EXCLUDED.task_args, task_kwargs = EXCLUDED.task_kwargs,
    status = EXCLUDED.status, worker = EXCLUDED.worker, content_type = EXCLUDED.content_type,
    content_encoding = EXCLUDED.content_encoding, result = EXCLUDED.result,
    date_done = EXCLUDED.date_done, traceback = EXCLUDED.traceback, meta = EXCLUDED.meta
"""


def job_succeed_with_result(
    *,
    job_id: str,
    task_id: str,
    encoded_result: str,
    content_type: str,
    content_encoding: str,
    encoded_meta: str,
    extended: dict[str, Any],
) -> None:
    """`encoded_result` is the JSON text Celery's result serializer produced (also valid jsonb)."""
    with connection.cursor() as cursor:
        cursor.execute(
            _SUCCESS_SQL,
            {
                "job_id": job_id,
                "task_id": task_id,
                "result": encoded_result,
                "content_type": content_type,
                "content_encoding": content_encoding,
                "meta": encoded_meta,
                "periodic_task_name": extended["periodic_task_name"],
                "task_name": extended["task_name"],
                "task_args": extended["task_args"],
                "task_kwargs": extended["task_kwargs"],
                "worker": extended["worker"],
            },
        )


class JobStateError(JobSubmitError):
    """The job is not in a state that allows this action (cancel a finished job, ...)."""


def _revoke(task_id: str, *, terminate: bool) -> None:
    try:
        current_app.control.revoke(task_id, terminate=terminate)
    except (KombuOperationalError, RedisError, OSError) as exc:
        # The runner's claim refuses cancelled jobs anyway; the revoke only saves a wasted
        # delivery (or stops a running one sooner).
        logger.warning("could not broadcast revoke of %s: %s", task_id, exc)


def job_cancel(*, job: Job) -> Job:
    """Cancel a job that has not finished. It never runs afterwards, even if its message is
    already in the broker: the runner's claim refuses a cancelled job."""
    was_running = job.status == JobStatus.RUNNING
    with transaction.atomic():
        updated = (
            Job.objects.filter(id=job.id)
            .exclude(status__in=FINAL_STATUSES)
            .update(status=JobStatus.CANCELLED, finished_at=Now(), error="cancelled")
        )
        if not updated:
            job.refresh_from_db()
            raise JobStateError("not_cancellable", f"The job has already {job.status}.")
        task_id = str(job.task_id)
        transaction.on_commit(lambda: _revoke(task_id, terminate=was_running))
    job.refresh_from_db()
    return job


def job_retry(*, job: Job) -> Job:
    """Run a failed or cancelled job again as a new attempt (a new Celery task id)."""
    with transaction.atomic():
        updated = Job.objects.filter(
            id=job.id, status__in=[JobStatus.FAILED, JobStatus.CANCELLED]
        ).update(
            status=JobStatus.QUEUED,
            task_id=uuid.uuid4(),
            attempts=0,
            result=None,
            error="",
            progress=None,
            run_at=None,
            started_at=None,
            finished_at=None,
            published_at=None,
        )
        if not updated:
            job.refresh_from_db()
            raise JobStateError(
                "not_retryable",
                f"Only failed or cancelled jobs can be retried; it is {job.status}.",
            )
        job.refresh_from_db()
        jobs_publish_on_commit([job])
    return job
