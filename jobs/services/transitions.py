"""Job status transitions. Each is a conditional UPDATE; 0 rows means another actor got there
first (the job was cancelled, retried, or already ended) and the caller backs off.

Worker side: claim, succeed (with the result row), requeue for a retry, fail, progress, and the
ends only Celery's main process sees. User side: cancel and retry. Reconciler: requeue a job
whose worker died.

Each attempt has a JobAttempt row (jobs.models). The claim inserts it and every transition that
ends an attempt ends its row in the same statement as the Job row (a data-modifying CTE), so the
history never disagrees with the job and the worker's hot path costs no extra round trip.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import uuid
from dataclasses import dataclass
from typing import Any

from celery import current_app, states
from django.db import transaction
from django.db.models import F
from django.db.models.functions import Now
from kombu.exceptions import OperationalError as KombuOperationalError
from redis.exceptions import RedisError
from saas_platform.lib.db import connection, rows_in_one_round_trip
from saas_platform.lib.state_redis import state_redis
from saas_platform.lib.worker_liveness import current_incarnation

from jobs.catalogue import UnknownJobType, job_type_cancellable, job_type_get
from jobs.models import AttemptCause, AttemptOutcome, Job, JobStatus
from jobs.services.activity import jobs_announce_on_commit
from jobs.services.dispatch import inflight_key
from jobs.services.submission import JobSubmitError
from jobs.worker_control import JOB_STOP

logger = logging.getLogger(__name__)

_MAX_ERROR_CHARS = 10_000
_MAX_TRACEBACK_CHARS = 50_000


@dataclass(frozen=True)
class ClaimedJob:
    type: str
    args: dict[str, Any]
    attempts: int
    max_attempts: int
    # Set for a workflow's step: its success advances the workflow in the same transaction.
    workflow_id: uuid.UUID | None = None
    position: int | None = None
    # From queued (or due) to this start; the schedule that submitted the job, if one did. For
    # metrics and the log/Sentry context (jobs.runner).
    queue_seconds: float | None = None
    schedule_id: int | None = None
    # The schedule's Sentry Crons monitor, if it has one (jobs.schedules.monitors).
    monitor_slug: str | None = None
    # A workflow's step that has a step after it: that step as submitted (its type, its
    # arguments without `input`) and the workflow's submitter, so that the success can make its
    # job in the same statement (jobs.services.workflows).
    next_step: NextStep | None = None


@dataclass(frozen=True)
class NextStep:
    type: str
    args: dict[str, Any]
    submitted_by: str


# One round trip: claim the job for this attempt, record the attempt, and read what is needed to
# run it. A message whose task id is not the job's current one is stale (the job was cancelled
# or retried). "running" is claimable only by a redelivered message (the broker requeued it
# because the previous attempt's worker was lost); a mere duplicate of a running job's message is
# refused.
# - SET reads the old row: a job that was running is reclaimed by a redelivery, which is this
#   attempt's cause. When the broker put the message back is unknown, so it counts as queued now.
# - `lost` ends the previous attempt's row if it is still running: nobody recorded its end. Its
#   finished_at is when that came to light, an upper bound on how long it ran.
# - Sibling CTEs see the table as it was before the statement, so `lost` cannot touch the row
#   `attempt` inserts, and nothing happens in either when `claimed` matched no row.
_CLAIM_SQL = """
WITH claimed AS (
    UPDATE jobs_job
       SET status = 'running', attempts = attempts + 1, started_at = now(), finished_at = NULL,
           worker = %(worker)s, ran_in_schema = current_schema(),
           attempt_cause = CASE WHEN status = 'running' THEN 'redelivered'
                                ELSE attempt_cause END,
           queued_at = CASE WHEN status = 'running' THEN now() ELSE queued_at END
     WHERE id = %(job_id)s AND task_id = %(task_id)s
       AND (status = 'queued' OR (status = 'running' AND %(redelivered)s))
    RETURNING id, task_id, type, args, attempts, max_attempts, worker, attempt_cause, queued_at,
              started_at, workflow_id, position, schedule_id
), lost AS (
    UPDATE jobs_jobattempt AS a
       SET outcome = 'lost', finished_at = claimed.started_at,
           error = %(lost_error)s
      FROM claimed
     WHERE a.job_id = claimed.id AND a.outcome = 'running'
), attempt AS (
    INSERT INTO jobs_jobattempt
           (job_id, number, task_id, worker, cause, outcome, queued_at, started_at, error,
            traceback)
    SELECT id, attempts, task_id, worker, attempt_cause, 'running', queued_at,
           started_at, '', ''
      FROM claimed
)
SELECT type, args, attempts, max_attempts, workflow_id, position,
       EXTRACT(EPOCH FROM started_at - queued_at), schedule_id,
       (SELECT NULLIF(s.monitor_slug, '') FROM jobs_schedule AS s WHERE s.id = claimed.schedule_id),
       CASE WHEN claimed.workflow_id IS NOT NULL THEN (
           SELECT jsonb_build_array(s.type, s.args, w.submitted_by)
             FROM jobs_workflowstep AS s JOIN jobs_workflow AS w ON w.id = s.workflow_id
            WHERE s.workflow_id = claimed.workflow_id AND s.position = claimed.position + 1
       ) END
  FROM claimed
"""
_REDELIVERED_ERROR = "worker lost: the broker redelivered the message to another attempt"


def _claimer(incarnation: str | None = None) -> str:
    """What a claim writes in Job.worker: this worker's incarnation and this process's pid."""
    return f"{incarnation or current_incarnation()}:{os.getpid()}"


def job_claim(
    *, job_id: str, task_id: str, worker: str | None = None, redelivered: bool = False
) -> ClaimedJob | None:
    """`worker`: the claiming worker's incarnation (saas_platform.lib.worker_liveness); the job
    records "<incarnation>:<pid>" (the pid is read per call: pool children fork after import)."""
    # The task's first statement, with the tenant's search_path in the same round trip. Its
    # commit does not wait for the WAL flush: the attempt's end, a synchronous commit, flushes the
    # claim's WAL before its own, so only a database crash between claim and end can lose a
    # claim. The job is then queued again as far as the database knows, and its message runs it
    # again (a worker's message is redelivered or republished as overdue): a repeated attempt,
    # as after any crash mid-job, never a lost job. Waiting for that flush was the slowest part
    # of a short job's claim (bench.variants, async-commit).
    rows = rows_in_one_round_trip(
        _CLAIM_SQL,
        {
            "worker": _claimer(worker),
            "job_id": job_id,
            "task_id": task_id,
            "redelivered": redelivered,
            "lost_error": _REDELIVERED_ERROR,
        },
        synchronous_commit=False,
        prepared=True,
    )
    row = rows[0] if rows else None
    if row is None:
        return None
    (job_type, args, attempts, max_attempts, workflow_id, position, queue_seconds, schedule_id,
     monitor_slug, next_step) = row  # fmt: skip
    # Django registers psycopg's jsonb loader as text (JSONField decodes it), so raw SQL sees a
    # JSON document as a string.
    if isinstance(args, str):
        args = json.loads(args)
    if isinstance(next_step, str):
        next_step = json.loads(next_step)
    return ClaimedJob(
        type=job_type,
        args=args,
        attempts=attempts,
        max_attempts=max_attempts,
        workflow_id=workflow_id,
        position=position,
        queue_seconds=float(queue_seconds) if queue_seconds is not None else None,
        schedule_id=schedule_id,
        monitor_slug=monitor_slug,
        next_step=NextStep(*next_step) if next_step else None,
    )


def _ending_attempt(job_update: str) -> str:
    """One statement: `job_update` (an UPDATE of jobs_job ... RETURNING id) and the end of that
    job's running attempt with %(outcome)s, %(attempt_error)s and %(traceback)s. It yields the
    number of jobs updated: 0 means another actor got there first, and then no attempt changes.
    """
    # Composes this module's constant statements only, never input: parameters stay parameters.
    return f"""
WITH job AS (
{job_update}
), attempt AS (
    UPDATE jobs_jobattempt AS a
       SET outcome = %(outcome)s, finished_at = now(), error = %(attempt_error)s,
           traceback = %(traceback)s
      FROM job
     WHERE a.job_id = job.id AND a.outcome = 'running'
)
SELECT count(*) FROM job
"""  # noqa: S608


def _execute_ending(
    sql: str,
    params: dict[str, Any],
    *,
    outcome: AttemptOutcome,
    error: str,
    traceback: str = "",
) -> bool:
    # Prepared like the claim: retries and failures are the hot path of a failing integration.
    rows = rows_in_one_round_trip(
        sql,
        {
            **params,
            "outcome": outcome.value,
            "attempt_error": error[:_MAX_ERROR_CHARS],
            # The end of a traceback is where it went wrong.
            "traceback": traceback[-_MAX_TRACEBACK_CHARS:],
        },
        prepared=True,
    )
    row = rows[0] if rows else None
    return bool(row and row[0])


# The ends an attempt records itself (fail, retry, success) are fenced by its claimer: if the
# attempt was taken over meanwhile (its worker was declared dead and a redelivered copy claimed
# the job), the old attempt's late end changes nothing, the new one's stands.
_FAIL_SQL = _ending_attempt("""
    UPDATE jobs_job SET status = 'failed', error = %(error)s, finished_at = now()
     WHERE id = %(job_id)s AND task_id = %(task_id)s
       AND status NOT IN ('succeeded', 'failed', 'cancelled')
       AND (status <> 'running' OR worker = %(claimer)s)
    RETURNING id""")


def job_fail(
    *,
    job_id: str,
    task_id: str,
    error: str,
    traceback: str = "",
    outcome: AttemptOutcome = AttemptOutcome.FAILED,
) -> bool:
    """Failed for good; `outcome` says how the attempt ended (timed_out for a time limit)."""
    return _execute_ending(
        _FAIL_SQL,
        {
            "job_id": job_id,
            "task_id": task_id,
            "error": error[:_MAX_ERROR_CHARS],
            "claimer": _claimer(),
        },
        outcome=outcome,
        error=error,
        traceback=traceback,
    )


# A retry waits in the table like any delayed job (scheduled until run_at, then sent by the
# dispatcher within the tenant's limits), not as a broker ETA held in a worker's memory; its
# queued_at is when it comes due.
_REQUEUE_FOR_RETRY_SQL = _ending_attempt("""
    UPDATE jobs_job
       SET status = 'scheduled', error = %(error)s, attempt_cause = 'retry', published_at = NULL,
           run_at = now() + make_interval(secs => %(countdown)s),
           queued_at = now() + make_interval(secs => %(countdown)s)
     WHERE id = %(job_id)s AND task_id = %(task_id)s AND status = 'running'
       AND worker = %(claimer)s
    RETURNING id""")


def job_requeue_for_retry(
    *, job_id: str, task_id: str, error: str, traceback: str = "", countdown: float
) -> bool:
    """Scheduled again after a failed attempt that will be retried (same task id) in `countdown`
    seconds; the caller announces it (jobs.fairness)."""
    return _execute_ending(
        _REQUEUE_FOR_RETRY_SQL,
        {
            "job_id": job_id,
            "task_id": task_id,
            "error": error[:_MAX_ERROR_CHARS],
            "countdown": countdown,
            "claimer": _claimer(),
        },
        outcome=AttemptOutcome.RETRYING,
        error=error,
        traceback=traceback,
    )


# A workflow's step whose workflow was cancelled while it ran (a type that is not cancellable),
# after an attempt that failed and would be retried: no retry, the job ends cancelled. Fenced by
# the claimer as the retry it replaces.
_CANCEL_INSTEAD_OF_RETRY_SQL = _ending_attempt("""
    UPDATE jobs_job SET status = 'cancelled', error = %(error)s, finished_at = now()
     WHERE id = %(job_id)s AND task_id = %(task_id)s AND status = 'running'
       AND worker = %(claimer)s
    RETURNING id""")


def job_cancel_instead_of_retry(*, job_id: str, task_id: str, error: str, traceback: str) -> bool:
    """The attempt ends `failed` with its error; the job `cancelled`, saying why."""
    return _execute_ending(
        _CANCEL_INSTEAD_OF_RETRY_SQL,
        {
            "job_id": job_id,
            "task_id": task_id,
            "error": f"cancelled with its workflow; its last attempt failed: {error}"[
                :_MAX_ERROR_CHARS
            ],
            "claimer": _claimer(),
        },
        outcome=AttemptOutcome.FAILED,
        error=error,
        traceback=traceback,
    )


def job_report_progress(*, job_id: str, task_id: str, progress: dict[str, Any]) -> bool:
    """Returns whether the attempt is still the job's running one (False: it was cancelled,
    or taken over by another attempt)."""
    return bool(
        Job.objects.filter(id=job_id, task_id=task_id, status=JobStatus.RUNNING).update(
            progress=progress
        )
    )


def job_cancelled_while_running(*, job_id: str, task_id: str) -> bool:
    """Whether this attempt's job was cancelled (its progress report found it not running)."""
    return Job.objects.filter(id=job_id, task_id=task_id, status=JobStatus.CANCELLED).exists()


_ENDED_OUTSIDE_TASK_SQL = _ending_attempt("""
    UPDATE jobs_job SET status = %(status)s, error = %(error)s, finished_at = now()
     WHERE task_id = %(task_id)s AND status NOT IN ('succeeded', 'failed', 'cancelled')
    RETURNING id""")


def job_record_ended_outside_task(
    *, task_id: str, status: str, outcome: AttemptOutcome, error: str, traceback: str = ""
) -> bool:
    """Called by the results backend for FAILURE/REVOKED, inside the tenant's schema.

    Covers the ends a task cannot record itself: hard time limit, lost worker, revoked before
    running. A job the task already ended is left as it is. `outcome` is the attempt's (the
    backend tells a time limit from a lost worker); a job revoked before it ran has no running
    attempt, so only the Job row changes. True when this ended the job.
    """
    final = JobStatus.CANCELLED if status == states.REVOKED else JobStatus.FAILED
    return _execute_ending(
        _ENDED_OUTSIDE_TASK_SQL,
        {"task_id": task_id, "status": final.value, "error": error[:_MAX_ERROR_CHARS]},
        outcome=outcome,
        error=error,
        traceback=traceback,
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
# The attempt's row ends in the same statement, only when the job's UPDATE matched (`done`).
# {gate} and {before}/{after} are for a workflow's step (jobs.services.workflows): its workflow's
# row locked first, its next step's job made in the same statement.
_SUCCESS_CTES = """{before}done AS (
    UPDATE jobs_job
       SET status = 'succeeded', result = %(result)s::jsonb, error = '', finished_at = now()
     WHERE id = %(job_id)s AND task_id = %(task_id)s AND status = 'running'
       AND worker = %(claimer)s{gate}
    RETURNING id
), attempt AS (
    UPDATE jobs_jobattempt AS a
       SET outcome = 'succeeded', finished_at = now()
      FROM done
     WHERE a.job_id = done.id AND a.outcome = 'running'
)"""
_RESULT_ROW_CTE = """, result_row AS (
INSERT INTO django_celery_results_taskresult
    (task_id, periodic_task_name, task_name, task_args, task_kwargs, status, worker,
     content_type, content_encoding, result, date_created, date_started, date_done,
     traceback, meta)
SELECT %(task_id)s, %(periodic_task_name)s, %(task_name)s, %(task_args)s, %(task_kwargs)s,
       'SUCCESS', %(worker)s, %(content_type)s, %(content_encoding)s, %(result)s, now(), NULL,
       now(), NULL, %(meta)s
  FROM done  -- only when the job's row took the success: a job reads succeeded exactly then
ON CONFLICT (task_id) DO UPDATE SET
    periodic_task_name = EXCLUDED.periodic_task_name, task_name = EXCLUDED.task_name,
    task_args = EXCLUDED.task_args, task_kwargs = EXCLUDED.task_kwargs,
    status = EXCLUDED.status, worker = EXCLUDED.worker, content_type = EXCLUDED.content_type,
    content_encoding = EXCLUDED.content_encoding, result = EXCLUDED.result,
    date_done = EXCLUDED.date_done, traceback = EXCLUDED.traceback, meta = EXCLUDED.meta
)"""


@functools.lru_cache(maxsize=16)
def _success_statement(result_row: bool, before: str, gate: str, after: str, also: str) -> str:
    """JobSuccess.sql's text, composed once per shape: it is on every job's success path."""
    # Composes constant fragments only, never input: parameters stay parameters.
    ctes = _SUCCESS_CTES.format(before=before, gate=gate)
    if result_row:
        ctes += _RESULT_ROW_CTE
    return f"WITH {ctes}{after}\nSELECT (SELECT count(*) FROM done){also}"  # noqa: S608


@dataclass(frozen=True)
class JobSuccess:
    """A job's success as its statement records it: the Job row with the result, the attempt's
    row, and the django-celery-results row unless `result_row` is None (a job type with
    ignore_result, whose success the runner records: Celery does not call the results backend
    for such a task). `result_row`: that row's columns as django-celery-results computes them
    (task_name, task_args, task_kwargs, periodic_task_name, worker, content_type,
    content_encoding, meta)."""

    job_id: str
    task_id: str
    encoded_result: str  # the JSON text Celery's result serializer produced (valid jsonb too)
    result_row: dict[str, str | None] | None = None

    def sql(self, *, before: str = "", gate: str = "", after: str = "", also: str = "") -> str:
        """The statement; it yields whether the job took the success (its first column). A
        caller's CTEs go `before` the job's (each ending in a comma) and `after` it (each
        starting with one, reading `done`), `gate` is ANDed to the job's UPDATE, and `also` adds
        columns to the one row it yields."""
        return _success_statement(self.result_row is not None, before, gate, after, also)

    def params(self) -> dict[str, Any]:
        return {
            "job_id": self.job_id,
            "task_id": self.task_id,
            "result": self.encoded_result,
            "claimer": _claimer(),
            **(self.result_row or {}),
        }


def job_succeed(success: JobSuccess) -> bool:
    """Record the success; whether the job took it (False: it had ended or moved on meanwhile,
    or another attempt took it over)."""
    rows = rows_in_one_round_trip(success.sql(), success.params(), prepared=True)
    return bool(rows and rows[0][0])


class JobStateError(JobSubmitError):
    """The job is not in a state that allows this action (cancel a finished job, ...)."""


def _stop(task_id: str, *, terminate: bool) -> None:
    """Tell every worker (jobs.worker_control.job_stop); `terminate`: a running job is stopped."""
    try:
        current_app.control.broadcast(
            JOB_STOP, arguments={"task_id": task_id, "terminate": terminate}
        )
    except (KombuOperationalError, RedisError, OSError) as exc:
        # The runner's claim refuses cancelled jobs anyway; the broadcast only saves a wasted
        # delivery, or stops a running job now rather than at its next progress report.
        logger.warning("could not broadcast the stop of %s: %s", task_id, exc)


_CANCEL_SQL = _ending_attempt("""
    UPDATE jobs_job SET status = 'cancelled', finished_at = now(), error = 'cancelled'
     WHERE id = %(job_id)s AND status NOT IN ('succeeded', 'failed', 'cancelled')
    RETURNING id""")
# A job type that is not cancellable: only while it has not started.
_CANCEL_UNSTARTED_SQL = _ending_attempt("""
    UPDATE jobs_job SET status = 'cancelled', finished_at = now(), error = 'cancelled'
     WHERE id = %(job_id)s AND status IN ('scheduled', 'queued')
    RETURNING id""")


def job_cancel(*, job: Job) -> Job:
    """Cancel a job that has not finished. It never runs afterwards, even if its message is
    already in the broker: the runner's claim refuses a cancelled job.

    A running job is stopped if its type is cancellable (jobs.catalogue.JobType.cancellable):
    its attempt ends `cancelled` now, its slot is freed now, and its worker terminates it (or it
    stops at its next progress report). A running job of any other type is left to finish: the
    cancel is refused (`not_cancellable`), naming why.
    """
    cancellable = job_type_cancellable(job.type)
    with transaction.atomic():
        updated = _execute_ending(
            _CANCEL_SQL if cancellable else _CANCEL_UNSTARTED_SQL,
            {"job_id": job.id},
            outcome=AttemptOutcome.CANCELLED,
            error="cancelled",
        )
        if not updated:
            job.refresh_from_db()
            if job.status == JobStatus.RUNNING:
                raise JobStateError(
                    "not_cancellable",
                    f"The job is running and a running {job.type} job cannot be stopped: it "
                    "finishes, and its outcome stands.",
                )
            raise JobStateError("not_cancellable", f"The job has already {job.status}.")
        task_id = str(job.task_id)
        tenant_id = connection.tenant.pk
        # Always with terminate for a cancellable type: `job` may have been read before it
        # started, and a worker not running the task only adds it to its revoked set.
        transaction.on_commit(lambda: _stop(task_id, terminate=cancellable))
        # Its concurrency slot is free at once, not when (if ever) a worker sees the stop.
        transaction.on_commit(lambda: _free_slot(tenant_id, task_id))
    job.refresh_from_db()
    return job


def _free_slot(tenant_id: int, task_id: str) -> None:
    try:
        state_redis().srem(inflight_key(tenant_id), task_id)
    except RedisError as exc:
        logger.warning("slot of cancelled %s not freed (the reconciler will): %s", task_id, exc)


def job_retry(*, job: Job) -> Job:
    """Run a failed or cancelled job again as a new attempt (a new Celery task id).

    Its attempts so far stay (JobAttempt rows and the `attempts` count); it gets the job type's
    attempt budget again on top of them.
    """
    try:
        budget = job_type_get(job.type).max_attempts
    except UnknownJobType:
        raise JobStateError("not_retryable", f"The job type {job.type} no longer exists.") from None
    with transaction.atomic():
        updated = Job.objects.filter(
            id=job.id, status__in=[JobStatus.FAILED, JobStatus.CANCELLED]
        ).update(
            status=JobStatus.QUEUED,
            task_id=uuid.uuid4(),
            max_attempts=F("attempts") + budget,
            attempt_cause=AttemptCause.USER_RETRY,
            queued_at=Now(),
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
        jobs_announce_on_commit(connection.tenant.pk, [job], bill=False)
    return job


_RESCUE_SQL = _ending_attempt("""
    UPDATE jobs_job
       SET status = 'queued', task_id = %(task_id)s, published_at = NULL, worker = '',
           queued_at = now(), attempt_cause = 'rescued'
     WHERE id = %(job_id)s AND status = 'running' AND worker = %(worker)s
    RETURNING id""")


def job_requeue_rescued(*, job_id: str, task_id: str, worker: str, reason: str) -> bool:
    """Requeue a running job whose worker died or whose end was never recorded (the reconciler)
    under the new task id `task_id`, so the old message, if Redis ever restores it, is stale and
    dropped. The caller publishes it.

    Conditional on the job still running on `worker`: if it moved on meanwhile, it is left be.
    The attempt that was running is marked lost, with `reason` as its error.
    """
    return _execute_ending(
        _RESCUE_SQL,
        {"job_id": job_id, "task_id": task_id, "worker": worker},
        outcome=AttemptOutcome.LOST,
        error=reason,
    )
