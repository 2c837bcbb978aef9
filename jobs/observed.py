"""What the runner tells logs, Sentry and Prometheus about an attempt (jobs.runner calls these).

- `attempt_begun`: the job's tenant, type, id, attempt and schedule on every log line and Sentry
  event of the attempt, its arguments kept out of events, and its time in queue measured.
- `attempt_ended`: the attempt's outcome counted by type and the tenant's plan (never the tenant:
  cardinality), and its run time.
- A monitored schedule's job also checks in with Sentry Crons: `in_progress` as each attempt
  begins, `ok` or `error` when the job ends for good (jobs.schedules.monitors).
- `final_failure_noted`: the attempt that fails the job for good is the one Sentry reports. It
  is tagged so (the event is then fingerprinted per tenant and job type) and carries the earlier
  attempts as breadcrumbs, since each of those ran in a scope of its own, often on another worker.
"""

from __future__ import annotations

import logging
from typing import Any

import sentry_sdk
from django.db import DatabaseError
from saas_platform.lib import metrics
from saas_platform.lib.db import connection
from saas_platform.lib.telemetry import context_bind, secrets_add

from billing.limits import tenant_limits
from jobs.models import AttemptOutcome, Job, JobAttempt
from jobs.schedules.monitors import CheckinStatus, checkin_begun, checkin_ended, checkins_enabled
from jobs.services.transitions import ClaimedJob

logger = logging.getLogger(__name__)

FINAL_FAILURE_TAG = "job_final"  # saas_platform.observability.sentry fingerprints on it


def _plan(tenant_id: int) -> str:
    try:
        return tenant_limits(tenant_id).plan  # cached per process (billing.limits)
    except DatabaseError:
        return "unknown"


def job_context(*, tenant: str, job_id: str) -> None:
    context_bind(tenant=tenant, job_id=job_id)


# What an attempt's outcome tells the job's Sentry Crons check-in; a retry tells it nothing.
_CHECKIN_STATUS: dict[str, CheckinStatus] = {
    AttemptOutcome.SUCCEEDED: "ok",
    AttemptOutcome.FAILED: "error",
    AttemptOutcome.TIMED_OUT: "error",
}


def attempt_begun(claimed: ClaimedJob, *, job_id: str, tenant_slug: str) -> None:
    context_bind(job_type=claimed.type, attempt=claimed.attempts, schedule=claimed.schedule_id)
    secrets_add(claimed.args)
    if claimed.queue_seconds is not None:
        metrics.JOB_QUEUE_SECONDS.labels(claimed.type).observe(max(0.0, claimed.queue_seconds))
    if claimed.monitor_slug and claimed.schedule_id is not None and checkins_enabled():
        try:
            checkin_begun(
                tenant_slug=tenant_slug,
                monitor_slug=claimed.monitor_slug,
                schedule_id=claimed.schedule_id,
                job_id=job_id,
            )
        except DatabaseError as exc:
            # A check-in is a report on the job, never a reason to fail it.
            logger.warning("Sentry check-in of job %s not sent: %s", job_id, exc)


def attempt_ended(
    *,
    tenant_id: int,
    job_type: str,
    status: str,
    run_seconds: float,
    result: Any = None,
    claimed: ClaimedJob | None = None,
    job_id: str = "",
    tenant_slug: str = "",
) -> None:
    if result is not None:
        secrets_add(result)
    metrics.JOBS_ENDED.labels(status, job_type, _plan(tenant_id)).inc()
    metrics.JOB_RUN_SECONDS.labels(job_type).observe(run_seconds)
    if claimed is not None:
        job_checkin_end(claimed, job_id=job_id, tenant_slug=tenant_slug, status=status)


def job_checkin_end(claimed: ClaimedJob, *, job_id: str, tenant_slug: str, status: str) -> None:
    """The check-in's end, when the attempt (outcome `status`) ended a monitored job for good."""
    checkin_status = _CHECKIN_STATUS.get(status)
    if claimed.monitor_slug and checkin_status is not None and checkins_enabled():
        checkin_ended(
            tenant_slug=tenant_slug,
            monitor_slug=claimed.monitor_slug,
            job_id=job_id,
            status=checkin_status,
        )


def final_failure_noted(job_id: str, attempt: int) -> None:
    context_bind(**{FINAL_FAILURE_TAG: "true"})
    try:
        earlier = list(
            JobAttempt.objects.filter(job_id=job_id, number__lt=attempt)
            .order_by("number")
            .values_list("number", "cause", "outcome", "error")
        )
    except DatabaseError as exc:
        logger.warning("earlier attempts of job %s not read for Sentry: %s", job_id, exc)
        return
    for number, cause, outcome, error in earlier:
        # The error text goes through the event scrubber like everything else.
        sentry_sdk.add_breadcrumb(
            category="job.attempt",
            level="warning",
            message=f"attempt {number} ({cause}): {outcome}: {error}"[:500],
        )


def job_checkin_ended_outside_task(*, task_id: str, outcome: AttemptOutcome) -> None:
    """The error check-in of a monitored job that Celery's main process ended (a hard time
    limit, a lost worker): its task never reached job_checkin_end, and without this the
    check-in stayed in progress until Sentry timed it out. One query, only with Sentry on."""
    if outcome == AttemptOutcome.CANCELLED or not checkins_enabled():
        return  # a cancel is no failure of the schedule's: nothing to alert on
    found = (
        Job.objects.filter(task_id=task_id)
        .exclude(schedule__monitor_slug="")
        .values_list("id", "schedule__monitor_slug")
        .first()
    )
    if found is not None and found[1]:
        checkin_ended(
            tenant_slug=connection.schema_name,
            monitor_slug=found[1],
            job_id=str(found[0]),
            status="error",
        )
