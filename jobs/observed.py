"""What the runner tells logs, Sentry and Prometheus about an attempt (jobs.runner calls these).

- `attempt_begun`: the job's tenant, type, id, attempt and schedule on every log line and Sentry
  event of the attempt, its arguments kept out of events, and its time in queue measured.
- `attempt_ended`: the attempt's outcome counted by type and the tenant's plan (never the tenant:
  cardinality), and its run time.
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
from saas_platform.lib.telemetry import context_bind, secrets_add

from billing.limits import tenant_limits
from jobs.models import JobAttempt
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


def attempt_begun(claimed: ClaimedJob) -> None:
    context_bind(job_type=claimed.type, attempt=claimed.attempts, schedule=claimed.schedule_id)
    secrets_add(claimed.args)
    if claimed.queue_seconds is not None:
        metrics.JOB_QUEUE_SECONDS.labels(claimed.type).observe(max(0.0, claimed.queue_seconds))


def attempt_ended(
    *, tenant_id: int, job_type: str, status: str, run_seconds: float, result: Any = None
) -> None:
    if result is not None:
        secrets_add(result)
    metrics.JOBS_ENDED.labels(status, job_type, _plan(tenant_id)).inc()
    metrics.JOB_RUN_SECONDS.labels(job_type).observe(run_seconds)


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
