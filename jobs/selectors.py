"""Reads on jobs (in the active tenant's schema)."""

from __future__ import annotations

import base64
import binascii
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.contrib.postgres.expressions import ArraySubquery
from django.db.models import OuterRef, Q, QuerySet
from django.db.models.functions import JSONObject
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from saas_platform.lib.tenant_context import active_tenant

from jobs.models import AttemptCause, Job, JobAttempt, JobStatus


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
    code: str  # scheduled, queued, tenant_suspended (later: rate_limited, concurrency_cap)
    message: str


def job_waiting_reason(*, job: Job, now: datetime | None = None) -> WaitingReason | None:
    """Why a job that is neither running nor finished has not started (CONTRACT.md), with the
    job's tenant active. None for a job that is running or finished."""
    if job.status not in (JobStatus.SCHEDULED, JobStatus.QUEUED):
        return None
    tenant = active_tenant()
    if tenant is not None and not tenant.is_active:
        return WaitingReason("tenant_suspended", "The tenant is suspended.")
    now = now or timezone.now()
    if job.run_at is not None and job.run_at > now:
        return WaitingReason("scheduled", f"Scheduled to run at {job.run_at.isoformat()}.")
    if job.attempt_cause == AttemptCause.RETRY and job.queued_at > now:
        return WaitingReason(
            "scheduled",
            f"Attempt {job.attempts} failed; attempt {job.attempts + 1} of {job.max_attempts}"
            f" is an automatic retry due at {job.queued_at.isoformat()}.",
        )
    return WaitingReason("queued", "Waiting for a worker.")


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


def job_list(
    *,
    status: str | None = None,
    job_type: str | None = None,
    limit: int = 50,
    cursor: str | None = None,
) -> JobPage:
    """Newest first, by (created_at, id), so pages are stable while new jobs arrive."""
    queryset: QuerySet[Job] = Job.objects.order_by("-created_at", "-id")
    if status:
        queryset = queryset.filter(status=status)
    if job_type:
        queryset = queryset.filter(type=job_type)
    if cursor:
        created_at, job_id = cursor_decode(cursor)
        queryset = queryset.filter(
            Q(created_at__lt=created_at) | Q(created_at=created_at, id__lt=job_id)
        )
    rows = list(queryset[: limit + 1])
    items = rows[:limit]
    next_cursor = cursor_encode(items[-1]) if len(rows) > limit else None
    return JobPage(items=items, next_cursor=next_cursor)
