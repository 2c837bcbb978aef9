"""Job endpoints (thin adapters over jobs.services and jobs.selectors)."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any, Literal
from uuid import UUID

from django.http import HttpRequest
from ninja import Field, Query, Router, Schema, Status
from pydantic import ConfigDict
from saas_platform.lib.api_docs import route_doc
from saas_platform.lib.api_errors import ApiError

from billing.usage import tenant_usage
from jobs.catalogue import JobArgsError, UnknownJobType, catalogue
from jobs.models import Job, JobStatus
from jobs.selectors import BadCursor, job_get, job_list
from jobs.services.submission import (
    MAX_DELAY,
    IdempotencyConflict,
    JobRequest,
    JobSubmitError,
    job_submit,
    job_submit_many,
)
from jobs.services.transitions import JobStateError, job_cancel, job_retry
from tenants.auth import require_scope

router = Router(tags=["jobs"])

MAX_BATCH = 1000
_IDEMPOTENCY_KEY = re.compile(r"^[\x21-\x7e]{1,255}$")


class Strict(Schema):
    # Unknown fields are refused, never ignored (CONTRACT.md): a typo must not pass silently.
    model_config = ConfigDict(extra="forbid")


class SubmitIn(Strict):
    type: str = Field(..., min_length=1, max_length=100, description="A job type name.")
    args: dict[str, Any] = Field(default_factory=dict)
    delay_seconds: float | None = Field(None, ge=0, le=MAX_DELAY.total_seconds())
    run_at: datetime | None = None
    priority: int | None = Field(None, ge=0, le=9)

    def to_request(self) -> JobRequest:
        return JobRequest(
            type=self.type,
            args=self.args,
            delay_seconds=self.delay_seconds,
            run_at=self.run_at,
            priority=self.priority,
        )


class BatchIn(Strict):
    jobs: list[SubmitIn] = Field(..., min_length=1, max_length=MAX_BATCH)


class JobOut(Schema):
    id: UUID
    type: str
    args: dict[str, Any]
    status: str
    attempts: int
    result: Any = None
    error: str | None = None
    progress: Any = None
    submitted_by: str
    schedule: int | None = None
    created_at: datetime
    run_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None

    @staticmethod
    def from_job(job: Job) -> dict[str, Any]:
        return {
            "id": job.id,
            "type": job.type,
            "args": job.args,
            "status": job.status,
            "attempts": job.attempts,
            "result": job.result,
            "error": job.error or None,
            "progress": job.progress,
            "submitted_by": job.submitted_by,
            "schedule": job.schedule_id,
            "created_at": job.created_at,
            "run_at": job.run_at,
            "started_at": job.started_at,
            "finished_at": job.finished_at,
        }


class BatchOut(Schema):
    jobs: list[JobOut]


class JobPageOut(Schema):
    items: list[JobOut]
    next_cursor: str | None


class JobTypeOut(Schema):
    name: str
    description: str
    args_schema: dict[str, Any]
    queue: str
    max_attempts: int
    time_limit_seconds: int


class ListParams(Schema):
    status: Literal["scheduled", "queued", "running", "succeeded", "failed", "cancelled"] | None = (
        None
    )
    type: str | None = Field(None, max_length=100)
    limit: int = Field(50, ge=1, le=200)
    cursor: str | None = Field(None, max_length=200)


def _submit_error(exc: Exception, *, index: int | None = None) -> ApiError:
    where = {} if index is None else {"index": index}
    if isinstance(exc, UnknownJobType):
        return ApiError(
            422, "unknown_job_type", f"There is no job type {exc.args[0]!r}.",
            {**where, "known": sorted(catalogue())},
        )  # fmt: skip
    if isinstance(exc, JobArgsError):
        return ApiError(422, "invalid_args", str(exc), {**where, "errors": exc.details})
    if isinstance(exc, IdempotencyConflict):
        return ApiError(409, exc.code, str(exc), exc.details)
    if isinstance(exc, JobSubmitError):
        return ApiError(
            422, exc.code, str(exc), {**where, "details": exc.details} if where else exc.details
        )
    raise exc


def _submitted_by(request: HttpRequest) -> str:
    return f"api_key:{request.auth.key_id}"  # type: ignore[attr-defined]


def _job_or_404(job_id: str) -> Job:
    job = job_get(job_id=job_id)
    if job is None:
        raise ApiError(404, "not_found", "No such job.")
    return job


@router.get("/job-types", summary="The job-type catalogue", **route_doc({200: list[JobTypeOut]}))
def job_types(request: HttpRequest) -> list[dict[str, Any]]:
    return [
        {
            "name": jt.name,
            "description": jt.description,
            "args_schema": dict(jt.args_schema),
            "queue": jt.queue,
            "max_attempts": jt.max_attempts,
            "time_limit_seconds": jt.time_limit_seconds,
        }
        for jt in catalogue().values()
    ]


@router.post("/jobs", summary="Submit a job", **route_doc({202: JobOut}, 409, 429, body=True))
def submit(request: HttpRequest, payload: SubmitIn) -> Status[dict[str, Any]]:
    require_scope(request, "jobs:write")
    key = request.headers.get("Idempotency-Key")
    if key is not None and not _IDEMPOTENCY_KEY.match(key):
        raise ApiError(400, "bad_idempotency_key", "Idempotency-Key: 1-255 printable ASCII.")
    try:
        job = job_submit(
            request=payload.to_request(), submitted_by=_submitted_by(request), idempotency_key=key
        )
    except (JobSubmitError, UnknownJobType, JobArgsError) as exc:
        raise _submit_error(exc) from None
    return Status(202, JobOut.from_job(job))


@router.post(
    "/jobs/batch",
    summary="Submit up to 1000 jobs, all or none",
    **route_doc({202: BatchOut}, 429, body=True),
)
def submit_batch(request: HttpRequest, payload: BatchIn) -> Status[dict[str, Any]]:
    require_scope(request, "jobs:write")
    try:
        jobs = job_submit_many(
            requests=[item.to_request() for item in payload.jobs],
            submitted_by=_submitted_by(request),
        )
    except (JobSubmitError, UnknownJobType, JobArgsError) as exc:
        raise _submit_error(exc, index=getattr(exc, "batch_index", None)) from None
    return Status(202, {"jobs": [JobOut.from_job(job) for job in jobs]})


@router.get("/jobs/{job_id}", summary="One job", **route_doc({200: JobOut}))
def get_job(request: HttpRequest, job_id: str) -> dict[str, Any]:
    require_scope(request, "jobs:read")
    return JobOut.from_job(_job_or_404(job_id))


@router.get("/jobs", summary="Jobs, newest first", **route_doc({200: JobPageOut}, 422))
def list_jobs(request: HttpRequest, params: Query[ListParams]) -> dict[str, Any]:
    require_scope(request, "jobs:read")
    try:
        page = job_list(
            status=params.status, job_type=params.type, limit=params.limit, cursor=params.cursor
        )
    except BadCursor as exc:
        raise ApiError(422, "invalid_cursor", str(exc)) from None
    return {"items": [JobOut.from_job(job) for job in page.items], "next_cursor": page.next_cursor}


@router.post(
    "/jobs/{job_id}/cancel",
    summary="Cancel a job not yet finished",
    **route_doc({200: JobOut}, 409),
)
def cancel(request: HttpRequest, job_id: str) -> dict[str, Any]:
    require_scope(request, "jobs:write")
    try:
        job = job_cancel(job=_job_or_404(job_id))
    except JobStateError as exc:
        raise ApiError(409, exc.code, str(exc)) from None
    return JobOut.from_job(job)


@router.post(
    "/jobs/{job_id}/retry", summary="Run a failed job again", **route_doc({202: JobOut}, 409)
)
def retry(request: HttpRequest, job_id: str) -> Status[dict[str, Any]]:
    require_scope(request, "jobs:write")
    try:
        job = job_retry(job=_job_or_404(job_id))
    except JobStateError as exc:
        raise ApiError(409, exc.code, str(exc)) from None
    return Status(202, JobOut.from_job(job))


class UsageCounts(Schema):
    jobs: int
    run_seconds: float


class Limits(Schema):
    jobs_per_month: int
    submit_rate: str
    concurrency: int
    schedules: int
    min_interval_seconds: int
    rates: dict[str, str]


class UsageOut(Schema):
    plan: str
    period_start: datetime
    period_end: datetime
    usage: UsageCounts
    limits: Limits


# Here rather than in billing: the document lists every job type's rate, and billing knows plans,
# not job types.
@router.get(
    "/usage",
    tags=["usage"],
    summary="This period's usage and the plan's limits",
    **route_doc({200: UsageOut}),
)
def usage(request: HttpRequest) -> dict[str, Any]:
    # Any valid key may read its own tenant's usage.
    return tenant_usage(
        tenant_id=request.auth.tenant_id,  # type: ignore[attr-defined]
        default_rates={name: jt.default_rate for name, jt in catalogue().items()},
    )


__all__ = ["JobStatus", "router"]
