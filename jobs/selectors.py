"""Reads on jobs (in the active tenant's schema)."""

from __future__ import annotations

import base64
import binascii
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.contrib.postgres.expressions import ArraySubquery
from django.db.models import OuterRef, Q, QuerySet, TextField
from django.db.models.functions import Cast, JSONObject
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from saas_platform.lib.rate_buckets import bucket_peek
from saas_platform.lib.state_redis import state_redis
from saas_platform.lib.tenant_context import active_tenant
from saas_platform.lib.worker_liveness import queue_consumers

from billing.limits import tenant_limits
from jobs.catalogue import job_type_cancellable
from jobs.models import (
    AttemptCause,
    Job,
    JobAttempt,
    JobStatus,
    Workflow,
    WorkflowStatus,
    WorkflowStep,
)
from jobs.services.dispatch import bucket_spec, inflight_key


class BadCursor(ValueError):
    pass


def job_get(*, job_id: str) -> Job | None:
    try:
        key = uuid.UUID(job_id)
    except ValueError:
        return None  # not an id we could have issued: the same 404 as a missing one
    return Job.objects.filter(id=key).first()


def job_attempts(*, job_id: uuid.UUID | str) -> QuerySet[JobAttempt]:
    """A job's attempts, oldest first (the portal's timeline)."""
    return JobAttempt.objects.filter(job_id=job_id).order_by("number")


@dataclass(frozen=True)
class JobWithAttempts:
    job: Job
    attempts: list[JobAttempt]


_ATTEMPT_COLUMNS = (
    "number", "task_id", "worker", "cause", "outcome", "queued_at", "started_at", "finished_at",
    "error", "traceback",
)  # fmt: skip


def _attempt_from_json(job: Job, row: dict[str, Any]) -> JobAttempt:
    # JSON carries times as ISO 8601 text and the task id as a string.
    times = {
        name: parse_datetime(row[name]) if row[name] is not None else None
        for name in ("queued_at", "started_at", "finished_at")
    }
    return JobAttempt(
        job=job,
        number=row["number"],
        task_id=uuid.UUID(row["task_id"]),
        worker=row["worker"],
        cause=row["cause"],
        outcome=row["outcome"],
        error=row["error"],
        traceback=row["traceback"],
        **times,
    )


def job_get_with_attempts(*, job_id: str) -> JobWithAttempts | None:
    """The job and its attempts (oldest first) in one statement: GET /jobs/{id} costs no more
    round trips than a job without history (tests/test_api_query_counts.py)."""
    try:
        key = uuid.UUID(job_id)
    except ValueError:
        return None
    rows = (
        JobAttempt.objects.filter(job_id=OuterRef("pk"))
        .order_by("number")
        .values(row=JSONObject(**{name: name for name in _ATTEMPT_COLUMNS}))
    )
    job = Job.objects.filter(id=key).annotate(attempt_log=ArraySubquery(rows)).first()
    if job is None:
        return None
    log: list[dict[str, Any]] = job.attempt_log
    return JobWithAttempts(job=job, attempts=[_attempt_from_json(job, row) for row in log])


@dataclass(frozen=True)
class WaitingReason:
    code: str  # scheduled, queued, rate_limited, concurrency_cap, tenant_suspended
    message: str
    details: dict[str, Any] = field(default_factory=dict)


def _ahead_in_line(job: Job) -> int:
    """The tenant's waiting jobs the dispatcher sends before this one (same queue, its order)."""
    earlier = Q(priority__gt=job.priority) | Q(priority=job.priority, created_at__lt=job.created_at)
    earlier |= Q(priority=job.priority, created_at=job.created_at, id__lt=job.id)
    return (
        Job.objects.filter(status=JobStatus.QUEUED, published_at__isnull=True, queue=job.queue)
        .filter(earlier)
        .count()
    )


def job_cancellable(*, job: Job) -> bool:
    """Whether a cancel of `job` would be accepted now (jobs.services.transitions.job_cancel):
    not finished, and not running unless its type can be stopped."""
    if job.is_final:
        return False
    return job.status != JobStatus.RUNNING or job_type_cancellable(job.type)


def job_waiting_reason(*, job: Job, now: datetime | None = None) -> WaitingReason | None:
    """Why a job that is neither running nor finished has not started (CONTRACT.md), with the
    job's tenant active: what the dispatcher itself would find in its way, in the order it
    looks. None for a job that is running or finished."""
    if job.status not in (JobStatus.SCHEDULED, JobStatus.QUEUED):
        return None
    tenant = active_tenant()
    if tenant is not None and not tenant.is_active:
        return WaitingReason("tenant_suspended", "The tenant is suspended.")
    now = now or timezone.now()
    if job.run_at is not None and job.run_at > now:
        when = job.run_at.isoformat()
        if job.attempt_cause == AttemptCause.RETRY:
            return WaitingReason(
                "scheduled",
                f"Attempt {job.attempts} failed; attempt {job.attempts + 1} of "
                f"{job.max_attempts} is an automatic retry due at {when}.",
                {"run_at": when, "retry": True},
            )
        return WaitingReason("scheduled", f"Scheduled to run at {when}.", {"run_at": when})
    if queue_consumers(job.queue) == 0:
        # Said first: no limit or turn matters while nothing consumes the queue.
        return WaitingReason(
            "queued",
            f"No worker consumes the {job.queue} queue now: it starts when one does.",
            {"queue": job.queue, "workers": 0, "in_broker": job.published_at is not None},
        )
    if job.published_at is not None:
        return WaitingReason(
            "queued",
            "Sent to the broker: the next free worker of its queue takes it.",
            {"in_broker": True, "queue": job.queue},
        )
    if tenant is None:
        return WaitingReason("queued", "Waiting to be sent to a worker.")
    limits = tenant_limits(tenant.pk)
    in_flight = int(state_redis().scard(inflight_key(tenant.pk)))
    if in_flight >= limits.concurrency:
        running = Job.objects.filter(status=JobStatus.RUNNING).count()
        return WaitingReason(
            "concurrency_cap",
            f"{in_flight} of this tenant's jobs are in flight ({running} running); its plan "
            f"runs {limits.concurrency} at once. It starts when one ends.",
            {"in_flight": in_flight, "running": running, "limit": limits.concurrency},
        )
    spec = bucket_spec(tenant.pk, job.type, limits)
    wait = bucket_peek(spec).next_token_in
    rate = limits.rate_for(job.type)
    if wait > 0:
        next_slot = (timezone.now() + timedelta(seconds=wait)).isoformat()
        return WaitingReason(
            "rate_limited",
            f"{job.type} is limited to {rate.text} for this tenant; the next slot is at "
            f"{next_slot}.",
            {"rate": rate.text, "burst": rate.burst, "next_slot": next_slot},
        )
    ahead = _ahead_in_line(job)
    return WaitingReason(
        "queued",
        f"{ahead} of this tenant's jobs are ahead of it in line for {job.queue}; other tenants' "
        "turns come in between, in fair order.",
        {"position": ahead + 1, "queue": job.queue},
    )


def cursor_encode(job: Job) -> str:
    raw = f"{job.created_at.isoformat()}|{job.id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def cursor_decode(cursor: str) -> tuple[datetime, uuid.UUID]:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        created, _, job_id = base64.urlsafe_b64decode(padded.encode()).decode().partition("|")
        when = datetime.fromisoformat(created)
        if when.tzinfo is None:
            raise ValueError("naive")
        return when, uuid.UUID(job_id)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise BadCursor("This cursor is not one the API returned.") from None


@dataclass(frozen=True)
class JobPage:
    items: list[Job]
    next_cursor: str | None


@dataclass(frozen=True)
class JobFilters:
    """What the API's and the portal's job lists can narrow by (all optional)."""

    status: str | None = None
    job_type: str | None = None
    submitted_by: str | None = None
    schedule_id: int | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None
    # A substring of the arguments as JSON text, any case: UPPER(args::text) LIKE, the
    # expression job_args_trgm_idx indexes, so a rare term is found through the index instead
    # of a walk over every job. At least 3 characters (a trigram) for the index to help.
    args_contain: str | None = None


def job_filtered(filters: JobFilters) -> QuerySet[Job]:
    queryset: QuerySet[Job] = Job.objects.all()
    if filters.status:
        queryset = queryset.filter(status=filters.status)
    if filters.job_type:
        queryset = queryset.filter(type=filters.job_type)
    if filters.submitted_by:
        queryset = queryset.filter(submitted_by=filters.submitted_by)
    if filters.schedule_id is not None:
        queryset = queryset.filter(schedule_id=filters.schedule_id)
    if filters.created_after is not None:
        queryset = queryset.filter(created_at__gte=filters.created_after)
    if filters.created_before is not None:
        queryset = queryset.filter(created_at__lt=filters.created_before)
    if filters.args_contain:
        queryset = queryset.annotate(args_text=Cast("args", TextField())).filter(
            args_text__icontains=filters.args_contain
        )
    return queryset


def job_list(
    *,
    status: str | None = None,
    job_type: str | None = None,
    limit: int = 50,
    cursor: str | None = None,
    filters: JobFilters | None = None,
) -> JobPage:
    """Newest first, by (created_at, id), so pages are stable while new jobs arrive."""
    filters = filters or JobFilters(status=status, job_type=job_type)
    queryset = job_filtered(filters).order_by("-created_at", "-id")
    if cursor:
        created_at, job_id = cursor_decode(cursor)
        # The plain bound on created_at is what lets the index scan start at the cursor: with
        # the OR alone PostgreSQL walked job_newest_idx from the newest row and filtered, so
        # a page 900,000 rows deep took 1.4 s (bench.portal); now it costs what the first does.
        queryset = queryset.filter(created_at__lte=created_at).filter(
            Q(created_at__lt=created_at) | Q(created_at=created_at, id__lt=job_id)
        )
    rows = list(queryset[: limit + 1])
    items = rows[:limit]
    next_cursor = cursor_encode(items[-1]) if len(rows) > limit else None
    return JobPage(items=items, next_cursor=next_cursor)


def workflow_get(*, workflow_id: str) -> Workflow | None:
    try:
        key = uuid.UUID(workflow_id)
    except ValueError:
        return None  # not an id we could have issued: the same 404 as a missing one
    return Workflow.objects.filter(id=key).first()


@dataclass(frozen=True)
class WorkflowStepView:
    step: WorkflowStep
    job: Job | None
    # The job's status; before the step has a job, "pending" while the workflow runs and
    # "cancelled" once it has ended or been cancelled: a step after a failed one never runs.
    status: str


@dataclass(frozen=True)
class WorkflowDetail:
    workflow: Workflow
    status: WorkflowStatus
    steps: list[WorkflowStepView]


def workflow_get_with_steps(*, workflow_id: str) -> WorkflowDetail | None:
    """The workflow, its steps in order and their jobs: three indexed queries."""
    workflow = workflow_get(workflow_id=workflow_id)
    if workflow is None:
        return None
    steps = list(WorkflowStep.objects.filter(workflow=workflow).order_by("position"))
    # Every job of a workflow has a position (jobs.services.workflows).
    jobs = {job.position or 0: job for job in Job.objects.filter(workflow=workflow)}
    last = jobs[max(jobs)] if jobs else None
    status = workflow.status_of(last)
    # A cancelled workflow still running has a step that cannot be stopped finishing: the steps
    # after it will never run.
    ended = status != WorkflowStatus.RUNNING or workflow.cancelled_at is not None
    pending = JobStatus.CANCELLED.value if ended else "pending"
    return WorkflowDetail(
        workflow=workflow,
        status=status,
        steps=[
            WorkflowStepView(
                step=step,
                job=jobs.get(step.position),
                status=jobs[step.position].status if step.position in jobs else pending,
            )
            for step in steps
        ],
    )
