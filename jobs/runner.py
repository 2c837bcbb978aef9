"""Running one attempt of a job inside a Celery task (the tenant is already active).

1. Claim the job with a conditional UPDATE for this message's task id; 0 rows means the message is
   stale (cancelled, retried or finished meanwhile) and is dropped without a result.
2. Run the job type with its validated arguments.
3. Record the outcome: scheduled again for a retry after its backoff (the dispatcher sends it
   when due) while attempts remain, or failed for good. Success is recorded by the results
   backend when it stores the result: the Job row and the result row in one statement; a job
   type with ignore_result has no result row, and the runner records its success itself.
   A workflow's step makes the next step's job in the transaction that records its success.
4. Either way, bill the attempt and free its concurrency slot (Redis, one command).
"""

from __future__ import annotations

import logging
import sys
import time
import traceback
from collections.abc import Callable
from typing import Any

import redis
from celery import Task
from celery.exceptions import Ignore, SoftTimeLimitExceeded
from django.db import InterfaceError, OperationalError
from kombu.utils.json import dumps as json_dumps
from saas_platform.lib.db import connection
from saas_platform.lib.tenant_context import headers_tenant_id, tenant_activate
from saas_platform.lib.worker_liveness import pool_kills_on_time_limit

from billing.metering import usage_count
from jobs.catalogue import JobCancelled, JobContext, PermanentJobError, job_type_get
from jobs.fairness import tenant_mark_ready
from jobs.models import AttemptOutcome
from jobs.observed import (
    attempt_begun,
    attempt_ended,
    final_failure_noted,
    job_checkin_end,
    job_context,
)
from jobs.services.dispatch import inflight_key
from jobs.services.transitions import (
    ClaimedJob,
    JobSuccess,
    job_cancel_instead_of_retry,
    job_cancelled_while_running,
    job_claim,
    job_fail,
    job_report_progress,
    job_requeue_for_retry,
    job_succeed,
)
from jobs.services.workflows import (
    WORKFLOW_STEP_ATTRIBUTE,
    StepInFlight,
    workflow_step_retry_or_stop,
    workflow_step_succeed,
)
from jobs.time_limits import JobTimeLimitExceeded, time_limit_enforced

logger = logging.getLogger(__name__)

DATABASE_RETRY_SECONDS = 5


class AttemptsExhausted(RuntimeError):
    """The job's message kept coming back (its workers were lost) and no attempts are left."""


def _error_text(exc: BaseException) -> str:
    return "".join(traceback.format_exception_only(type(exc), exc)).strip()


def _hard_time_limit(task: Task, default: float) -> float:  # type: ignore[type-arg]
    # A job's own lower limit travels in the message (jobs.services.publishing: time_limit).
    # Celery's request.timelimit is (hard, soft): the soft one, read here before, is never set,
    # so a job's own limit was ignored on threads and solo pools.
    limits = task.request.timelimit or (None, None)
    return float(limits[0] or task.time_limit or default)


def _traceback_text(exc: BaseException) -> str:
    return "".join(traceback.format_exception(exc))


def _progress_reporter(
    job_id: str, task_id: str, *, cancellable: bool
) -> Callable[[dict[str, Any]], None]:
    def report(progress: dict[str, Any]) -> None:
        try:
            running = job_report_progress(job_id=job_id, task_id=task_id, progress=progress)
            # The cooperative stop, for pools that cannot terminate the job's process: a report
            # is a moment a job can stop at (a prefork worker has killed it before then).
            if (
                not running
                and cancellable
                and job_cancelled_while_running(job_id=job_id, task_id=task_id)
            ):
                raise JobCancelled(job_id)
        except (OperationalError, InterfaceError) as exc:
            # Progress is a hint: a database outage must not fail the job (it did: the error
            # ended the attempt, and with the database down the job was failed for good). The
            # broken connection is dropped, so the next statement connects again, with the
            # tenant's search_path set anew (django-tenants), once the database is back.
            logger.warning("progress of job %s not recorded: %s", job_id, exc)
            connection.close()

    return report


def job_run_attempt(task: Task, job_id: str) -> Any:  # type: ignore[type-arg]
    task_id = str(task.request.id)
    # kombu marks a message it puts back after a lost worker as redelivered.
    redelivered = bool((task.request.delivery_info or {}).get("redelivered"))
    tenant_id = headers_tenant_id(task.request)
    try:
        if tenant_id is not None:
            # task_prerun activates it, but cannot while the database is down (Celery logs that
            # and runs the task in public): here that failure is a retry like the claim's,
            # rather than a claim in public that fails for good. A no-op once active.
            tenant_activate(tenant_id)
        job_context(tenant=connection.schema_name, job_id=job_id)
        claimed = job_claim(job_id=job_id, task_id=task_id, redelivered=redelivered)
    except (OperationalError, InterfaceError) as exc:
        # The database is unreachable: the job was not claimed and no attempt was used. Send the
        # message again later rather than let Celery ack it as failed with the job still queued.
        raise task.retry(exc=exc, countdown=DATABASE_RETRY_SECONDS, max_retries=None) from exc
    if claimed is None:
        raise Ignore()
    if claimed.workflow_id is not None and claimed.position is not None:
        # Read by whoever records the success (the results backend, or _record_own_success):
        # the next step is made in the same statement.
        step = StepInFlight(str(claimed.workflow_id), claimed.position, claimed.next_step)
        setattr(task.request, WORKFLOW_STEP_ATTRIBUTE, step)
    tenant_slug = connection.schema_name  # a tenant's schema is named after its slug
    attempt_begun(claimed, job_id=job_id, tenant_slug=tenant_slug)
    if claimed.attempts > claimed.max_attempts:
        # Only redeliveries after lost workers get here: each counted an attempt.
        message = f"gave up after {claimed.max_attempts} attempts (worker lost)"
        job_fail(job_id=job_id, task_id=task_id, error=message)
        final_failure_noted(job_id, claimed.attempts)
        job_checkin_end(
            claimed, job_id=job_id, tenant_slug=tenant_slug, status=AttemptOutcome.FAILED
        )
        raise AttemptsExhausted(message)
    job_type = job_type_get(claimed.type)
    context = JobContext(
        job_id=job_id,
        attempt=claimed.attempts,
        schema_name=connection.schema_name,
        report_progress=_progress_reporter(job_id, task_id, cancellable=job_type.cancellable),
    )
    began = time.monotonic()
    # Set by every path that records the attempt's end; None when something else ended it. At a
    # hard time limit the pool ends this child, and this frame can still unwind (seen: its error
    # check-in arrived after the one of Celery's main process, which recorded the failure in
    # jobs.results_backend): nothing here may then report the end a second time.
    outcome: AttemptOutcome | None = None
    result: Any = None
    try:
        if pool_kills_on_time_limit():
            result = job_type.run(context, claimed.args)
        else:
            with time_limit_enforced(_hard_time_limit(task, job_type.time_limit_seconds)):
                result = job_type.run(context, claimed.args)
    except SoftTimeLimitExceeded:
        # The job type's soft limit (prefork only), raised inside the job before the hard one.
        job_fail(
            job_id=job_id,
            task_id=task_id,
            error=f"soft time limit of {job_type.soft_time_limit_seconds} s exceeded",
            outcome=AttemptOutcome.TIMED_OUT,
        )
        outcome = AttemptOutcome.TIMED_OUT
        final_failure_noted(job_id, claimed.attempts)
        raise
    except JobTimeLimitExceeded:
        limit = _hard_time_limit(task, job_type.time_limit_seconds)
        # As a prefork pool's kill is recorded (jobs.results_backend): timed out, not retried.
        job_fail(
            job_id=job_id,
            task_id=task_id,
            error=f"time limit of {limit:g} s exceeded",
            outcome=AttemptOutcome.TIMED_OUT,
        )
        outcome = AttemptOutcome.TIMED_OUT
        final_failure_noted(job_id, claimed.attempts)
        raise
    except JobCancelled as exc:
        # The cancel recorded the attempt and freed the slot; acknowledged with no result.
        logger.info("job %s stopped: it was cancelled", job_id)
        outcome = AttemptOutcome.CANCELLED
        raise Ignore() from exc
    except PermanentJobError as exc:
        job_fail(
            job_id=job_id, task_id=task_id, error=_error_text(exc), traceback=_traceback_text(exc)
        )
        outcome = AttemptOutcome.FAILED
        final_failure_noted(job_id, claimed.attempts)
        raise
    except Exception as exc:
        if claimed.attempts < claimed.max_attempts:
            # The backoff restarts with each budget: a user's retry grants max_attempts anew.
            budget_start = claimed.max_attempts - job_type.max_attempts
            countdown = job_type.retry_countdown(max(1, claimed.attempts - budget_start))
            if _requeue_for_retry(claimed, job_id, task_id, exc, countdown):
                # The message's routing key is the queue it came from (a job type's, or one a
                # test routed it to).
                queue = (task.request.delivery_info or {}).get("routing_key") or job_type.queue
                _announce_retry(connection.tenant.pk, queue, time.time() + countdown)
            logger.info("job %s failed (%s); retry in %.0f s", job_id, _error_text(exc), countdown)
            outcome = AttemptOutcome.RETRYING
            # Acknowledged with no result: the retry is the job's next attempt, sent again by the
            # dispatcher when due.
            raise Ignore() from exc
        job_fail(
            job_id=job_id, task_id=task_id, error=_error_text(exc), traceback=_traceback_text(exc)
        )
        outcome = AttemptOutcome.FAILED
        final_failure_noted(job_id, claimed.attempts)
        raise
    else:
        outcome = AttemptOutcome.SUCCEEDED
    finally:
        # What is leaving the attempt, if anything: Ignore is a retry, any other exception has
        # failed the job for good (every handler above records it before raising).
        leaving = sys.exc_info()[1]
        failed = leaving is not None and not isinstance(leaving, Ignore)
        run_seconds = time.monotonic() - began
        _attempt_ended(connection.tenant.pk, task_id, run_seconds, failed=failed)
        if outcome is not None:
            attempt_ended(
                tenant_id=connection.tenant.pk,
                job_type=claimed.type,
                status=outcome.value,
                run_seconds=run_seconds,
                result=result,
                claimed=claimed,
                job_id=job_id,
                tenant_slug=tenant_slug,
            )
    if job_type.ignore_result:
        _record_own_success(task, job_id, task_id, result)
    return result


def _requeue_for_retry(
    claimed: ClaimedJob, job_id: str, task_id: str, exc: BaseException, countdown: float
) -> bool:
    """Whether the job was scheduled for its retry. A step of a workflow cancelled while it ran
    (a type that is not cancellable) is not retried: it ends cancelled."""

    def requeue() -> bool:
        return job_requeue_for_retry(
            job_id=job_id,
            task_id=task_id,
            error=_error_text(exc),
            traceback=_traceback_text(exc),
            countdown=countdown,
        )

    if claimed.workflow_id is None:
        return requeue()
    return workflow_step_retry_or_stop(
        workflow_id=claimed.workflow_id,
        requeue=requeue,
        stop=lambda: job_cancel_instead_of_retry(
            job_id=job_id, task_id=task_id, error=_error_text(exc), traceback=_traceback_text(exc)
        ),
    )


def _record_own_success(task: Task, job_id: str, task_id: str, result: Any) -> None:  # type: ignore[type-arg]
    """A job type with ignore_result: Celery does not call the results backend on success, so
    the runner records it, on the Job row only (no django-celery-results row)."""
    success = JobSuccess(job_id=job_id, task_id=task_id, encoded_result=json_dumps(result))
    step = getattr(task.request, WORKFLOW_STEP_ATTRIBUTE, None)
    if step is None:
        job_succeed(success)
    else:
        workflow_step_succeed(step=step, success=success, result=result)


def _announce_retry(tenant_id: int, queue: str, due: float) -> None:
    try:
        tenant_mark_ready(tenant_id, queue, due=due)
    except redis.RedisError as exc:
        # The job waits in the table all the same; the reconciler announces it again.
        logger.warning("retry of a job of tenant %s not announced: %s", tenant_id, exc)


def _attempt_ended(tenant_id: int, task_id: str, run_seconds: float, *, failed: bool) -> None:
    """Bill the attempt and free its concurrency slot: one command. A Redis failure (logged by
    usage_count) loses the count and leaves the slot taken until the reconciler frees it
    (jobs_free_stale_slots). An attempt its worker died in is never billed: it has no end."""
    usage_count(
        tenant_id=tenant_id,
        attempts=1,
        run_seconds=run_seconds,
        failed=failed,
        set_remove=(inflight_key(tenant_id), task_id),
    )
