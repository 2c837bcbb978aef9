"""Job submission: validate, write the row, announce it after commit.

A job is accepted when its row is committed. It then waits in the tenant's table (`queued`, or
`scheduled` until its run_at) for the dispatcher (jobs.dispatcher), which sends it to the broker
in fair order and within the tenant's limits; an `on_commit` callback tells the dispatcher the
tenant has work. If Redis is down then, nothing is lost: the row is there, and the reconciler
announces it again.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.db import IntegrityError, connection, transaction
from django.db.models import Field, Model
from django.db.models.sql import InsertQuery
from django.utils import timezone
from saas_platform.lib.tenant_context import active_tenant

from jobs.catalogue import job_type_get
from jobs.models import Job, JobBatch, JobStatus
from jobs.services.activity import jobs_announce_on_commit, tenants_jobs_announce_on_commit

logger = logging.getLogger(__name__)

MAX_DELAY = timedelta(days=365)
DEFAULT_PRIORITY = 5


class JobSubmitError(ValueError):
    """Submission refused; nothing was written or published. `code` names the reason."""

    def __init__(self, code: str, message: str, details: Any = None) -> None:
        super().__init__(message)
        self.code = code
        self.details = details


class IdempotencyConflict(JobSubmitError):
    pass


@dataclass(frozen=True)
class JobRequest:
    type: str
    args: dict[str, Any]
    delay_seconds: float | None = None
    run_at: datetime | None = None
    priority: int | None = None
    # Operators and tests may lower the job type's time limit for one job; tenants cannot.
    time_limit_seconds: int | None = None


def _require_tenant() -> Any:
    tenant = active_tenant()
    if tenant is None:
        raise RuntimeError("jobs are submitted with a tenant active")
    return tenant


def _when(request: JobRequest, now: datetime) -> datetime | None:
    if request.delay_seconds is not None and request.run_at is not None:
        raise JobSubmitError("invalid_schedule", "Give delay_seconds or run_at, not both.")
    if request.delay_seconds is not None:
        if not 0 <= request.delay_seconds <= MAX_DELAY.total_seconds():
            raise JobSubmitError(
                "invalid_delay",
                f"delay_seconds must be between 0 and {int(MAX_DELAY.total_seconds())}.",
            )
        return now + timedelta(seconds=request.delay_seconds) if request.delay_seconds else None
    if request.run_at is not None:
        if timezone.is_naive(request.run_at):
            raise JobSubmitError("invalid_run_at", "run_at needs a time zone offset.")
        if request.run_at - now > MAX_DELAY:
            raise JobSubmitError("invalid_run_at", "run_at is more than 365 days away.")
        return request.run_at if request.run_at > now else None
    return None


def _build(request: JobRequest, *, submitted_by: str, now: datetime) -> Job:
    job_type = job_type_get(request.type)
    args = job_type.validate_args(request.args)
    run_at = _when(request, now)
    priority = DEFAULT_PRIORITY if request.priority is None else request.priority
    if not 0 <= priority <= 9:
        raise JobSubmitError("invalid_priority", "priority must be between 0 and 9.")
    job = Job(
        type=job_type.name,
        args=args,
        # A delayed job waits in the table until its run_at (the dispatcher sends it then): no
        # broker ETAs, which a worker would hold in memory meanwhile.
        status=JobStatus.SCHEDULED if run_at is not None else JobStatus.QUEUED,
        priority=priority,
        queue=job_type.queue,
        max_attempts=job_type.max_attempts,
        submitted_by=submitted_by,
        run_at=run_at,
        queued_at=run_at or now,
    )
    # The first attempt's Celery task id is the job id: results and logs line up.
    job.task_id = job.id
    if request.time_limit_seconds is not None:
        if not 1 <= request.time_limit_seconds <= job_type.time_limit_seconds:
            raise JobSubmitError(
                "invalid_time_limit",
                f"time_limit_seconds must be between 1 and {job_type.time_limit_seconds}.",
            )
        job.time_limit_seconds = request.time_limit_seconds
    return job


def request_fingerprint(request: JobRequest) -> str:
    """A stable hash of what was asked, to tell a replay from a conflicting reuse of a key."""
    body = {
        "type": request.type,
        "args": request.args,
        "delay_seconds": request.delay_seconds,
        "run_at": request.run_at.isoformat() if request.run_at else None,
        "priority": request.priority,
    }
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def job_submit(
    *,
    request: JobRequest,
    submitted_by: str,
    idempotency_key: str | None = None,
    schedule_id: int | None = None,
) -> Job:
    """Validate and accept one job in the active tenant. Returns the committed row (inside a
    caller's transaction: written, committed with it). `schedule_id` names the schedule that
    made it (the tenant-aware beat).

    With an idempotency key: the same key and the same request return the original job; the
    same key with a different request raises IdempotencyConflict. Nothing is written then.
    """
    tenant = _require_tenant()
    now = timezone.now()
    job = _build(request, submitted_by=submitted_by, now=now)
    job.schedule_id = schedule_id
    if idempotency_key is not None:
        job.idempotency_key = idempotency_key
        job.request_hash = request_fingerprint(request)
        existing = Job.objects.filter(idempotency_key=idempotency_key).first()
        if existing is not None:
            return _replay(existing, job)
    try:
        # Inside a caller's transaction, a savepoint keeps an idempotency race from breaking it.
        # Otherwise the single INSERT commits on its own (two round trips fewer than
        # BEGIN/COMMIT) and the on_commit announcement runs right after it.
        with transaction.atomic() if connection.in_atomic_block else nullcontext():
            job.save(force_insert=True)
            jobs_announce_on_commit(tenant.pk, [job], bill=True)
    except IntegrityError:
        if idempotency_key is None:
            raise  # not an idempotency race: nothing to look up (a NULL key matches any job)
        # Another request with the same key committed between our check and our insert.
        existing = Job.objects.filter(idempotency_key=idempotency_key).first()
        if existing is None:
            raise
        return _replay(existing, job)
    return job


def job_build(*, request: JobRequest, submitted_by: str, schedule_id: int | None = None) -> Job:
    """A validated job, not yet written: for a caller that accepts several jobs, each of which
    may be refused on its own (the beat's occurrences), with jobs_accept. Raises as job_submit
    does (UnknownJobType, JobArgsError, JobSubmitError)."""
    job = _build(request, submitted_by=submitted_by, now=timezone.now())
    job.schedule_id = schedule_id
    return job


def jobs_accept(jobs: list[Job]) -> None:
    """Write jobs from job_build in the caller's transaction: one INSERT, one announcement
    after its commit."""
    if not jobs:
        return
    tenant = _require_tenant()
    Job.objects.bulk_create(jobs)
    jobs_announce_on_commit(tenant.pk, jobs, bill=True)


def jobs_insert_sql(jobs: list[Job]) -> tuple[str, list[Any]]:
    """The INSERT of jobs from job_build, as bulk_create writes them (Django's own compiler),
    for a caller that sends it among other statements of several tenants in one round trip (the
    beat): the table is the one of the search_path in force where it runs. The caller commits
    them and then calls jobs_announce_accepted."""
    fields = [field for field in Job._meta.concrete_fields if not field.generated]
    query = InsertQuery(Job)
    query.insert_values(fields, list[Model](jobs))
    [(sql, params)] = query.get_compiler(connection=connection).as_sql()
    for job in jobs:
        job._state.adding, job._state.db = False, connection.alias
    return sql, list(params)


@functools.cache
def _one_job_insert() -> tuple[str, tuple[Field[Any, Any], ...]]:
    """Django's compiled one-row INSERT of a job, and its fields in the order of its values."""
    fields = tuple(field for field in Job._meta.concrete_fields if not field.generated)
    query = InsertQuery(Job)
    query.insert_values(list(fields), [Job()])
    [(sql, _)] = query.get_compiler(connection=connection).as_sql()
    return sql, fields


def job_insert_sql(job: Job) -> tuple[str, list[Any]]:
    """jobs_insert_sql for one job, for the hot path that makes a workflow's next step: the
    statement is compiled once per process, and each job's values are prepared as Django's
    insert compiler prepares them (each field's pre_save, then get_db_prep_save), without
    compiling it again (a fifth of a chain step's success under the profiler went there)."""
    sql, fields = _one_job_insert()
    params = [field.get_db_prep_save(field.pre_save(job, True), connection) for field in fields]
    job._state.adding, job._state.db = False, connection.alias
    return sql, params


def jobs_announce_accepted(by_tenant: dict[int, list[Job]]) -> None:
    """After the commit of jobs_insert_sql's jobs, by tenant: billed and announced as
    jobs_accept does, in one round trip for all of them."""
    tenants_jobs_announce_on_commit(by_tenant, bill=True)


def _replay(existing: Job, attempted: Job) -> Job:
    if existing.request_hash != attempted.request_hash:
        raise IdempotencyConflict(
            "idempotency_conflict",
            "This Idempotency-Key was used with a different request.",
            {"job_id": str(existing.id)},
        )
    return existing


def job_submit_many(
    *, requests: list[JobRequest], submitted_by: str, idempotency_key: str | None = None
) -> list[Job]:
    """Validate and accept jobs all or none: one invalid request rejects the whole batch.

    With an idempotency key, as for one job: the same key and the same requests return the
    original jobs (in their order); the same key with other requests raises
    IdempotencyConflict; nothing is written then.
    """
    tenant = _require_tenant()
    now = timezone.now()
    jobs: list[Job] = []
    for index, request in enumerate(requests):
        try:
            jobs.append(_build(request, submitted_by=submitted_by, now=now))
        except Exception as exc:
            exc.batch_index = index  # type: ignore[attr-defined]  # tells the API which one
            raise
    batch_hash = ""
    if idempotency_key is not None:
        batch_hash = hashlib.sha256(
            "".join(request_fingerprint(request) for request in requests).encode()
        ).hexdigest()
        existing = JobBatch.objects.filter(idempotency_key=idempotency_key).first()
        if existing is not None:
            return _replay_batch(existing, batch_hash)
    try:
        with transaction.atomic():
            if idempotency_key is not None:
                # First: a concurrent replay of the key fails here before anything is written.
                JobBatch.objects.create(
                    idempotency_key=idempotency_key,
                    request_hash=batch_hash,
                    job_ids=[job.id for job in jobs],
                )
            Job.objects.bulk_create(jobs)
            jobs_announce_on_commit(tenant.pk, jobs, bill=True)
    except IntegrityError:
        existing = JobBatch.objects.filter(idempotency_key=idempotency_key).first()
        if idempotency_key is None or existing is None:
            raise
        return _replay_batch(existing, batch_hash)
    return jobs


def _replay_batch(existing: JobBatch, batch_hash: str) -> list[Job]:
    if existing.request_hash != batch_hash:
        raise IdempotencyConflict(
            "idempotency_conflict",
            "This Idempotency-Key was used with a different batch.",
            {"job_ids": [str(job_id) for job_id in existing.job_ids]},
        )
    by_id = Job.objects.in_bulk(existing.job_ids)
    return [by_id[job_id] for job_id in existing.job_ids]
