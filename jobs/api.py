"""Job endpoints (thin adapters over jobs.services and jobs.selectors)."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, Literal
from uuid import UUID

from django.http import HttpRequest
from ninja import Field, Query, Router, Schema, Status
from pydantic import ConfigDict, JsonValue, field_validator
from saas_platform.lib.api_docs import route_doc
from saas_platform.lib.api_errors import ApiError
from saas_platform.lib.api_parser import STRING_PATTERN, STRING_RULE

from billing.quotas import QuotaExceeded
from billing.usage import tenant_usage
from jobs.catalogue import JobArgsError, UnknownJobType, catalogue
from jobs.models import Job, JobAttempt, JobStatus
from jobs.selectors import (
    BadCursor,
    JobWithAttempts,
    job_get,
    job_get_with_attempts,
    job_list,
    job_waiting_reason,
)
from jobs.services.admission import SubmitRateExceeded, submission_admit
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
# Read by the view itself (a malformed key is a 400, not ninja's 422), so declared here.
IDEMPOTENCY_KEY_HEADER = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "description": "1 to 255 printable ASCII characters, no spaces (else a 400). Per tenant: "
    "the same key with the same body returns the original job, with another body it is a 409.",
    "schema": {
        "type": "string",
        "minLength": 1,
        "maxLength": 255,
        "pattern": _IDEMPOTENCY_KEY.pattern,
    },
}


def _safe_str(**constraints: Any) -> Any:
    """A query string as the parser reads it. The pattern only documents: the parser refuses
    first, with a 400."""
    return Field(json_schema_extra={"pattern": STRING_PATTERN}, **constraints)


_JOB_TYPE_NAMES: list[JsonValue] = [name for name in sorted(catalogue())]


class Strict(Schema):
    # Unknown fields are refused, never ignored (CONTRACT.md): a typo must not pass silently.
    model_config = ConfigDict(extra="forbid")


class SubmitIn(Strict):
    """One job. `delay_seconds` and `run_at` exclude each other (both set is a 422)."""

    model_config = ConfigDict(
        json_schema_extra={
            "not": {
                "required": ["delay_seconds", "run_at"],
                "properties": {"delay_seconds": {"type": "number"}, "run_at": {"type": "string"}},
            }
        }
    )

    # The catalogue is fixed per deployment, so the document can list it; validation stays
    # the service's (an unknown name is a 422 naming the known ones).
    type: str = Field(
        ...,
        min_length=1,
        max_length=100,
        description="A job type name, from GET /job-types.",
        json_schema_extra={"enum": _JOB_TYPE_NAMES},
    )
    args: dict[str, Any] = Field(
        default_factory=dict,
        description="The job type's arguments, checked against its JSON schema (`args_schema` "
        "in GET /job-types): arguments that do not fit are a 422. Strings and keys in it have "
        f"{STRING_RULE}, numbers are finite, and it is nested at most 31 levels deep (400).",
    )
    delay_seconds: float | None = Field(
        None, ge=0, le=MAX_DELAY.total_seconds(), description="Run this many seconds from now."
    )
    run_at: datetime | None = Field(
        None,
        description="Run at this time: ISO 8601 with a UTC offset (a naive time is a 422), at "
        "most 365 days ahead (a 422 beyond); a time in the past runs now.",
    )
    priority: int | None = Field(None, ge=0, le=9, description="0 (lowest) to 9; default 5.")

    # pydantic's lax mode would take true as 1, "5" as 5 and a number as a Unix time; the
    # document says a JSON number and an ISO 8601 string, and so does the API.
    @field_validator("delay_seconds", "priority", mode="before")
    @classmethod
    def _a_json_number(cls, value: Any) -> Any:
        if isinstance(value, bool | str):
            raise ValueError("must be a JSON number")
        return value

    @field_validator("run_at", mode="before")
    @classmethod
    def _a_json_string(cls, value: Any) -> Any:
        if value is not None and not isinstance(value, str):
            raise ValueError("must be an ISO 8601 string")
        return value

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
    workflow: UUID | None = Field(None, description="The workflow this job is a step of.")
    position: int | None = Field(None, description="Its step's position there, from 1.")
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
            "workflow": job.workflow_id,
            "position": job.position,
            "created_at": job.created_at,
            "run_at": job.run_at,
            "started_at": job.started_at,
            "finished_at": job.finished_at,
        }


class AttemptOut(Schema):
    number: int
    cause: str = Field(..., description="submitted, retry, user_retry, redelivered or rescued")
    queued_at: datetime
    started_at: datetime
    finished_at: datetime | None = None
    duration_seconds: float | None = None
    worker: str
    outcome: str = Field(
        ..., description="running, succeeded, failed, retrying, lost, timed_out or cancelled"
    )
    error: str | None = None
    traceback: str | None = None

    @staticmethod
    def from_attempt(attempt: JobAttempt) -> dict[str, Any]:
        return {
            "number": attempt.number,
            "cause": attempt.cause,
            "queued_at": attempt.queued_at,
            "started_at": attempt.started_at,
            "finished_at": attempt.finished_at,
            "duration_seconds": attempt.duration_seconds,
            "worker": attempt.worker,
            "outcome": attempt.outcome,
            "error": attempt.error or None,
            "traceback": attempt.traceback or None,
        }


class WaitingReasonOut(Schema):
    code: Literal["scheduled", "queued", "rate_limited", "concurrency_cap", "tenant_suspended"]
    message: str
    details: dict[str, Any] = Field(
        default_factory=dict,
        description=(
            "scheduled: run_at (and retry); queued: position in the tenant's line, or in_broker; "
            "rate_limited: rate, burst, next_slot; concurrency_cap: in_flight, running, limit."
        ),
    )


class JobDetailOut(JobOut):
    """One job with its history; the list leaves both out to stay cheap."""

    waiting_reason: WaitingReasonOut | None = None
    attempts_log: list[AttemptOut]

    @staticmethod
    def from_detail(detail: JobWithAttempts) -> dict[str, Any]:
        reason = job_waiting_reason(job=detail.job)
        return {
            **JobOut.from_job(detail.job),
            "waiting_reason": (
                {"code": reason.code, "message": reason.message, "details": reason.details}
                if reason is not None
                else None
            ),
            "attempts_log": [AttemptOut.from_attempt(attempt) for attempt in detail.attempts],
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
    step_args_schema: dict[str, Any] | None = Field(
        None,
        description="Its arguments as a later workflow step, `input` (the previous step's "
        "result) included; null: it takes no input and can only be a workflow's first step.",
    )
    result_schema: dict[str, Any] | None = Field(
        None, description="What it returns (a workflow's next step takes it); null: anything."
    )
    queue: str
    max_attempts: int
    time_limit_seconds: int
    cancellable: bool = Field(
        description="Whether a cancel stops a running job of this type. False: a running job "
        "finishes (a cancel of it is a 409; a workflow's cancel cancels the steps after it)."
    )


class ListParams(Schema):
    status: Literal["scheduled", "queued", "running", "succeeded", "failed", "cancelled"] | None = (
        None
    )
    type: Annotated[str, _safe_str(max_length=100)] | None = Field(
        None, description=f"Only jobs of this type. With {STRING_RULE} (else a 400)."
    )
    limit: int = Field(50, ge=1, le=200)
    cursor: Annotated[str, _safe_str(max_length=200)] | None = Field(
        None,
        description=f"The previous page's next_cursor (any other value is a 422). With "
        f"{STRING_RULE} (else a 400).",
    )


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


def _admit(
    request: HttpRequest,
    *,
    jobs: int,
    idempotency_key: str | None,
    batch: bool,
    workflow: bool = False,
) -> None:
    """Before anything is written: over the tenant's submit rate is a 429 (CONTRACT.md)."""
    try:
        submission_admit(
            tenant_id=request.auth.tenant_id,  # type: ignore[attr-defined]
            jobs=jobs,
            idempotency_key=idempotency_key,
            batch=batch,
            workflow=workflow,
        )
    except QuotaExceeded as exc:
        raise ApiError(
            429,
            "quota_exceeded",
            f"{exc} Nothing was accepted.",
            {
                "retry_after": exc.retry_after,
                "jobs_per_month": exc.state.quota,
                "jobs_used": exc.state.used,
                "jobs": exc.wanted,
                "period_end": exc.state.period_end.isoformat(),
            },
            headers={"Retry-After": str(exc.retry_after)},
        ) from None
    except SubmitRateExceeded as exc:
        raise ApiError(
            429,
            "rate_limited",
            f"{exc} Nothing was accepted; retry in {exc.retry_after} s.",
            {
                "retry_after": exc.retry_after,
                "submit_rate": exc.rate.text,
                "submit_burst": exc.rate.burst,
                "jobs": exc.wanted,
            },
            headers={"Retry-After": str(exc.retry_after)},
        ) from None


def _idempotency_key(request: HttpRequest) -> str | None:
    key = request.headers.get("Idempotency-Key")
    if key is not None and not _IDEMPOTENCY_KEY.match(key):
        raise ApiError(400, "bad_idempotency_key", "Idempotency-Key: 1-255 printable ASCII.")
    return key


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
            "step_args_schema": dict(jt.step_args_schema) if jt.step_args_schema else None,
            "result_schema": dict(jt.result_schema) if jt.result_schema else None,
            "queue": jt.queue,
            "max_attempts": jt.max_attempts,
            "time_limit_seconds": jt.time_limit_seconds,
            "cancellable": jt.cancellable,
        }
        for jt in catalogue().values()
    ]


@router.post(
    "/jobs",
    summary="Submit a job",
    **route_doc({202: JobOut}, 409, 429, body=True, parameters=[IDEMPOTENCY_KEY_HEADER]),
)
def submit(request: HttpRequest, payload: SubmitIn) -> Status[dict[str, Any]]:
    require_scope(request, "jobs:write")
    idempotency_key = _idempotency_key(request)
    _admit(request, jobs=1, idempotency_key=idempotency_key, batch=False)
    try:
        job = job_submit(
            request=payload.to_request(),
            submitted_by=_submitted_by(request),
            idempotency_key=idempotency_key,
        )
    except (JobSubmitError, UnknownJobType, JobArgsError) as exc:
        raise _submit_error(exc) from None
    return Status(202, JobOut.from_job(job))


@router.post(
    "/jobs/batch",
    summary="Submit up to 1000 jobs, all or none",
    **route_doc({202: BatchOut}, 409, 429, body=True, parameters=[IDEMPOTENCY_KEY_HEADER]),
)
def submit_batch(request: HttpRequest, payload: BatchIn) -> Status[dict[str, Any]]:
    require_scope(request, "jobs:write")
    idempotency_key = _idempotency_key(request)
    # All or none, like the batch itself: tokens for every job, or a 429 and nothing taken.
    _admit(request, jobs=len(payload.jobs), idempotency_key=idempotency_key, batch=True)
    try:
        jobs = job_submit_many(
            requests=[item.to_request() for item in payload.jobs],
            submitted_by=_submitted_by(request),
            idempotency_key=idempotency_key,
        )
    except (JobSubmitError, UnknownJobType, JobArgsError) as exc:
        raise _submit_error(exc, index=getattr(exc, "batch_index", None)) from None
    return Status(202, {"jobs": [JobOut.from_job(job) for job in jobs]})


@router.get("/jobs/{job_id}", summary="One job", **route_doc({200: JobDetailOut}))
def get_job(request: HttpRequest, job_id: str) -> dict[str, Any]:
    require_scope(request, "jobs:read")
    detail = job_get_with_attempts(job_id=job_id)
    if detail is None:
        raise ApiError(404, "not_found", "No such job.")
    return JobDetailOut.from_detail(detail)


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
    attempts: int = Field(description="Attempts that ran to an end (a retry is one more).")
    run_seconds: float


class QuotaUse(Schema):
    jobs_per_month: int
    jobs_used: int
    percent_used: float
    alarm_percent: int = Field(description="The share of the quota at which `alarm` turns on.")
    alarm: bool = Field(description="At or over alarm_percent of the monthly job quota.")


class Limits(Schema):
    jobs_per_month: int
    submit_rate: str = Field(description="Submissions a key's tenant may make, Celery notation.")
    submit_burst: int = Field(description="Submissions allowed at once above that rate.")
    concurrency: int = Field(description="Jobs of this tenant running at once, at most.")
    schedules: int
    min_interval_seconds: int
    rates: dict[str, str] = Field(description="Per job type: runs per unit of time, cluster-wide.")
    bursts: dict[str, int] = Field(description="Per job type: runs allowed at once above the rate.")
    fairness_weight: float = Field(description="Share of the cluster against other tenants.")


class UsageOut(Schema):
    plan: str
    period_start: datetime
    period_end: datetime
    usage: UsageCounts
    quota: QuotaUse
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
        job_types=sorted(catalogue()),
    )


__all__ = ["JobStatus", "router"]
