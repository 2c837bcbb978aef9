"""Job status transitions. Each is a conditional UPDATE; 0 rows means another actor got there
first (the job was cancelled, retried, or already ended) and the caller backs off.
"""

from __future__ import annotations

import json
import os
import socket
from dataclasses import dataclass
from typing import Any

from celery import states
from django.db.models.functions import Now
from saas_platform.db import connection

from jobs.catalogue import catalogue
from jobs.models import FINAL_STATUSES, Job, JobStatus

_HOSTNAME = socket.gethostname()
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
    *, job_id: str, task_id: str, nodename: str | None = None, redelivered: bool = False
) -> ClaimedJob | None:
    # "<worker node name>:<pid>": the node name is what the liveness check knows; the pid is read
    # per call because pool children are forked after this module is imported.
    worker = f"{nodename or _HOSTNAME}:{os.getpid()}"
    with connection.cursor() as cursor:
        cursor.execute(_CLAIM_SQL, [worker, job_id, task_id, redelivered])
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


def job_report_progress(*, job_id: str, task_id: str, progress: dict[str, Any]) -> None:
    Job.objects.filter(id=job_id, task_id=task_id, status=JobStatus.RUNNING).update(
        progress=progress
    )


def job_record_ended_outside_task(
    *, task_id: str, status: str, error: str, task_name: str | None
) -> None:
    """Called by the results backend for FAILURE/REVOKED, inside the tenant's schema.

    Covers the ends a task cannot record itself: hard time limit, lost worker, revoked before
    running. A job the task already ended is left as it is.
    """
    if task_name is not None and task_name not in catalogue():
        return
    final = JobStatus.CANCELLED if status == states.REVOKED else JobStatus.FAILED
    Job.objects.filter(task_id=task_id).exclude(status__in=FINAL_STATUSES).update(
        status=final, error=error[:_MAX_ERROR_CHARS], finished_at=Now()
    )
