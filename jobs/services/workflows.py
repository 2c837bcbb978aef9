"""Workflows: chains of catalogue job types (the seed's `fetch.s(url) | parse.s() | store.s()`),
where no worker ever waits on another job.

- Submission checks the whole chain before writing anything: every step's type and arguments,
  and that each later step takes an `input` of the type the step before it returns (the job
  types' result_schema and step_args_schema). Then the workflow, its steps and the first step's
  job commit together; that job waits in the table for the dispatcher like any other.
- A later step's job is made only when the previous step's job succeeded, in the statement
  that records that success (workflow_step_succeed), with the previous result as its `input`.
  It is then dispatched like any job: the tenant's rate limits, concurrency cap and fair order
  apply, and the tenant is the one the platform stamps on every message. A worker killed between
  two steps loses nothing: the success and the next job committed together, or neither did and
  the step's own job is rescued and run again.
- A step that fails for good (or is cancelled) ends the chain: the workflow reads failed
  (cancelled) and its later steps, of which nothing was ever made, read cancelled.
- Cancel: no next step is made, and the unfinished step's job is cancelled: stopped if it runs
  and its type is cancellable (jobs.catalogue.JobType.cancellable); otherwise it finishes, its
  outcome stands, it is not retried, and the steps after it read cancelled. Retry: resumes at
  the failed or cancelled step (a user retry of its job; earlier steps' jobs and results stay),
  or makes the next step of a chain cancelled between two steps.

Lock order, everywhere: the workflow row, then a job row. The success of a step takes the
workflow row first (before the job's UPDATE), so it serialises with cancel and retry.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.db import IntegrityError, transaction
from django.db.models import Exists, F, OuterRef
from django.utils import timezone
from saas_platform.lib.db import connection, rows_in_one_round_trip
from saas_platform.lib.tenant_context import active_tenant

from jobs.catalogue import JobArgsError, JobType, UnknownJobType, catalogue, job_type_get
from jobs.models import Job, JobStatus, Workflow, WorkflowStatus, WorkflowStep
from jobs.services.activity import jobs_announce_on_commit
from jobs.services.submission import (
    DEFAULT_PRIORITY,
    IdempotencyConflict,
    JobSubmitError,
    job_insert_sql,
)
from jobs.services.transitions import (
    JobStateError,
    JobSuccess,
    NextStep,
    job_cancel,
    job_retry,
    job_succeed,
)

MIN_STEPS = 2
MAX_STEPS = 20
# Set by the runner on a workflow step's Celery request (per execution, never on the shared task
# object): a StepInFlight, read by whoever records the step's success.
WORKFLOW_STEP_ATTRIBUTE = "workflow_step"


class WorkflowStepError(JobSubmitError):
    """A step of the chain is refused; nothing was written. `details["step"]` is its position."""


@dataclass(frozen=True)
class StepRequest:
    type: str
    args: dict[str, Any]


def _types(schema: Mapping[str, Any] | None) -> set[str] | None:
    """The JSON types a schema allows, or None for any."""
    if schema is None or "type" not in schema:
        return None
    declared = schema["type"]
    return {declared} if isinstance(declared, str) else set(declared)


def _describe(types: set[str] | None) -> str:
    return "anything" if types is None else " or ".join(sorted(types))


def input_fits(result_schema: Mapping[str, Any] | None, input_schema: Mapping[str, Any]) -> bool:
    """Whether every value of `result_schema`'s types is of a type `input_schema` allows.

    Types only: a result's finer constraints are checked when the next step's job is made.
    """
    accepted = _types(input_schema)
    if accepted is None:
        return True
    returned = _types(result_schema)
    if returned is None:
        return False  # a result that may be anything cannot be shown to fit
    return all(t in accepted or (t == "integer" and "number" in accepted) for t in returned)


def _step_error(position: int, code: str, message: str, **details: Any) -> WorkflowStepError:
    return WorkflowStepError(code, f"Step {position}: {message}", {"step": position, **details})


def _checked(steps: Sequence[StepRequest]) -> list[JobType]:
    """The steps' job types; raises WorkflowStepError naming the first step that is refused."""
    if not MIN_STEPS <= len(steps) <= MAX_STEPS:
        raise JobSubmitError(
            "invalid_steps", f"A workflow has {MIN_STEPS} to {MAX_STEPS} steps, not {len(steps)}."
        )
    types: list[JobType] = []
    for position, step in enumerate(steps, start=1):
        try:
            job_type = job_type_get(step.type)
        except UnknownJobType:
            raise _step_error(
                position, "unknown_job_type", f"there is no job type {step.type!r}.",
                known=sorted(catalogue()),
            ) from None  # fmt: skip
        try:
            if position == 1:
                job_type.validate_args(step.args)
            else:
                _check_later_step(position, job_type, types[-1], step.args)
                job_type.validate_step_args_before_input(step.args)
        except JobArgsError as exc:
            raise _step_error(position, "invalid_args", str(exc), errors=exc.details) from None
        types.append(job_type)
    return types


def _check_later_step(
    position: int, job_type: JobType, previous: JobType, args: dict[str, Any]
) -> None:
    if "input" in args:
        raise _step_error(
            position, "invalid_args", "`input` is the previous step's result; leave it out."
        )
    if job_type.input_schema is None:
        raise _step_error(
            position, "step_takes_no_input",
            f"{job_type.name} takes no input, so it cannot follow step {position - 1}.",
        )  # fmt: skip
    if not input_fits(previous.result_schema, job_type.input_schema):
        raise _step_error(
            position, "step_input_mismatch",
            f"{job_type.name} takes {_describe(_types(job_type.input_schema))} as input, but "
            f"step {position - 1} ({previous.name}) returns "
            f"{_describe(_types(previous.result_schema))}.",
        )  # fmt: skip


def workflow_fingerprint(steps: Sequence[StepRequest]) -> str:
    body = [{"type": step.type, "args": step.args} for step in steps]
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def _step_job(
    workflow_id: Any, submitted_by: str, position: int, job_type: JobType, args: dict[str, Any]
) -> Job:
    job = Job(
        type=job_type.name,
        args=args,
        status=JobStatus.QUEUED,
        priority=DEFAULT_PRIORITY,
        queue=job_type.queue,
        max_attempts=job_type.max_attempts,
        submitted_by=submitted_by,
        queued_at=timezone.now(),
        workflow_id=workflow_id,
        position=position,
    )
    job.task_id = job.id  # as for any job: the first attempt's task id is the job id
    return job


def workflow_submit(
    *, steps: Sequence[StepRequest], submitted_by: str, idempotency_key: str | None = None
) -> Workflow:
    """Validate the chain and accept it in the active tenant; returns the committed workflow.

    With an idempotency key (a key space of workflows' own): the same key and steps return the
    original workflow, other steps raise IdempotencyConflict; nothing is written then.
    """
    tenant = active_tenant()
    if tenant is None:
        raise RuntimeError("workflows are submitted with a tenant active")
    types = _checked(steps)
    request_hash = workflow_fingerprint(steps) if idempotency_key is not None else ""
    if idempotency_key is not None:
        existing = Workflow.objects.filter(idempotency_key=idempotency_key).first()
        if existing is not None:
            return _replay(existing, request_hash)
    try:
        with transaction.atomic():
            workflow = Workflow.objects.create(
                step_count=len(steps),
                submitted_by=submitted_by,
                idempotency_key=idempotency_key,
                request_hash=request_hash,
            )
            WorkflowStep.objects.bulk_create(
                WorkflowStep(workflow=workflow, position=n, type=step.type, args=step.args)
                for n, step in enumerate(steps, start=1)
            )
            first = _step_job(workflow.id, submitted_by, 1, types[0], steps[0].args)
            first.save(force_insert=True)
            jobs_announce_on_commit(tenant.pk, [first], bill=True)
    except IntegrityError:
        if idempotency_key is None:
            raise
        # Another request with the same key committed between our check and our insert.
        existing = Workflow.objects.filter(idempotency_key=idempotency_key).first()
        if existing is None:
            raise
        return _replay(existing, request_hash)
    return workflow


def _replay(existing: Workflow, request_hash: str) -> Workflow:
    if existing.request_hash != request_hash:
        raise IdempotencyConflict(
            "idempotency_conflict",
            "This Idempotency-Key was used with a different workflow.",
            {"workflow_id": str(existing.id)},
        )
    return existing


def _next_job(
    *,
    workflow_id: Any,
    submitted_by: str,
    position: int,
    step_type: str,
    step_args: dict[str, Any],
    previous_result: Any,
) -> Job:
    """The job of step `position`, not saved, with the previous result as `input`.

    A result that does not fit after all (the submission checked types only), or a type that
    left the catalogue since, makes the job failed at once: the workflow fails, visibly, at
    this step, rather than waiting for ever.
    """
    error = ""
    try:
        job_type = job_type_get(step_type)
        args = job_type.validate_args({**step_args, "input": previous_result}, as_step=True)
    except UnknownJobType:
        job_type, args = None, step_args
        error = f"the job type {step_type} no longer exists"
    except JobArgsError as exc:
        args = step_args
        error = f"the result of step {position - 1} does not fit as input: {exc}"
    if job_type is None:
        job = Job(type=step_type, args=args, queue="default", workflow_id=workflow_id)
        job.position, job.submitted_by, job.task_id = position, submitted_by, job.id
    else:
        job = _step_job(workflow_id, submitted_by, position, job_type, args)
    if error:
        job.status, job.error, job.finished_at = JobStatus.FAILED, error, timezone.now()
    return job


def _make_step(workflow: Workflow, step: WorkflowStep, previous_result: Any) -> Job:
    """The step's job, saved inside the caller's transaction and announced after its commit."""
    job = _next_job(
        workflow_id=workflow.id,
        submitted_by=workflow.submitted_by,
        position=step.position,
        step_type=step.type,
        step_args=step.args,
        previous_result=previous_result,
    )
    job.save(force_insert=True)
    if job.status != JobStatus.FAILED:
        jobs_announce_on_commit(connection.tenant.pk, [job], bill=True)
    return job


@dataclass(frozen=True)
class StepInFlight:
    """What the runner knows of a workflow step it runs (from the job's claim), for whoever
    records its success: the workflow, the step's position and the step after it, if any."""

    workflow_id: str
    position: int
    next_step: NextStep | None


# The workflow's row, locked before the job's row is touched (the lock order of a cancel and a
# retry): the job's UPDATE is gated on it, so it is taken first and held to the commit.
_WORKFLOW_LOCKED = """workflow AS (
    SELECT cancelled_at FROM jobs_workflow WHERE id = %(workflow_id)s FOR UPDATE
), """
_GATE = " AND EXISTS (SELECT FROM workflow)"


@functools.lru_cache(maxsize=8)
def _guarded_insert(insert_sql: str) -> str:
    """Django's one-row INSERT of a job (VALUES (%s, ...)) as a CTE that inserts only when the
    step's job took the success (`done`) and the workflow is not cancelled, its values named
    (`%(next_<n>)s`) to sit among the success statement's named ones. The text is the same for
    every job (all concrete fields), so the statement is prepared once per session and schema.
    """
    head, values = insert_sql.split(" VALUES (", 1)
    count = values.count("%s")
    if values != ", ".join(["%s"] * count) + ")":
        raise AssertionError(f"unexpected INSERT from Django's compiler: {insert_sql}")
    select = ", ".join(f"%(next_{n})s" for n in range(count))
    # Django's compiled column list and our placeholders only: values stay parameters.
    cte = f", next AS ({head} SELECT {select} FROM done, workflow"  # noqa: S608
    return cte + " WHERE workflow.cancelled_at IS NULL RETURNING id)"


def workflow_step_succeed(*, step: StepInFlight, success: JobSuccess, result: Any) -> bool:
    """Record a step's success and make the next step's job: one statement, so one round trip
    and one commit (a transaction of an ORM lock, the success, an INSERT and a COMMIT cost a
    step twice a single job's CPU in the worker; bench.workflows). The workflow's row is locked
    first, so a cancel or retry waits or is waited for, and no job is made for a cancelled one.
    Returns whether the job took the success.
    """
    following = step.next_step
    if following is None:
        # The last step: nothing to make, and nothing to lock against.
        return job_succeed(success)
    job = _next_job(
        workflow_id=step.workflow_id,
        submitted_by=following.submitted_by,
        position=step.position + 1,
        step_type=following.type,
        step_args=following.args,
        previous_result=result,
    )
    insert_sql, insert_params = job_insert_sql(job)
    rows = rows_in_one_round_trip(
        success.sql(
            before=_WORKFLOW_LOCKED,
            gate=_GATE,
            after=_guarded_insert(insert_sql),
            also=", (SELECT count(*) FROM next)",
        ),
        {
            **success.params(),
            "workflow_id": step.workflow_id,
            **{f"next_{n}": value for n, value in enumerate(insert_params)},
        },
        prepared=True,
    )
    took, made = rows[0] if rows else (0, 0)
    if made and job.status != JobStatus.FAILED:
        jobs_announce_on_commit(connection.tenant.pk, [job], bill=True)
    return bool(took)


def workflow_step_retry_or_stop(
    *, workflow_id: Any, requeue: Callable[[], bool], stop: Callable[[], bool]
) -> bool:
    """A step's attempt failed and has attempts left: `requeue` it for its retry, or, if the
    workflow was cancelled while the step ran (a type that is not cancellable), `stop` it.
    Returns whether it was requeued.

    The workflow row is locked first, as by a cancel: a cancel committing meanwhile is waited
    for and seen, so a step is never retried after its workflow's cancel was accepted.
    """
    with transaction.atomic():
        cancelled_at = (
            Workflow.objects.select_for_update()
            .filter(id=workflow_id)
            .values_list("cancelled_at", flat=True)
            .first()
        )
        if cancelled_at is not None:
            stop()
            return False
        return requeue()


def _locked(workflow: Workflow) -> tuple[Workflow, Job | None]:
    locked = Workflow.objects.select_for_update().get(id=workflow.id)
    return locked, workflow_last_job(locked)


def workflow_last_job(workflow: Workflow) -> Job | None:
    """The job of the furthest step reached (job_workflow_position_unique is its index)."""
    return Job.objects.filter(workflow=workflow).order_by("-position").first()


def workflow_cancel(*, workflow: Workflow) -> Workflow:
    """No next step is made, and the unfinished step's job is cancelled: stopped if it is
    running and its type is cancellable. A running step of a type that is not finishes, and its
    outcome stands (the workflow reads `running` until then); it is not retried."""
    with transaction.atomic():
        locked, last = _locked(workflow)
        status = locked.status_of(last)
        if status != WorkflowStatus.RUNNING:
            raise JobStateError("not_cancellable", f"The workflow has already {status}.")
        if locked.cancelled_at is not None and _finishing_uncancellable(last):
            raise JobStateError(
                "not_cancellable",
                "The workflow is being cancelled: its running step cannot be stopped and "
                "finishes first.",
            )
        locked.cancelled_at = timezone.now()
        locked.save(update_fields=["cancelled_at"])
        if last is not None and not last.is_final:
            # It may have ended on its own meanwhile (failed): the workflow reads that way then.
            with contextlib.suppress(JobStateError):
                job_cancel(job=last)
    return locked


def _finishing_uncancellable(job: Job | None) -> bool:
    """Whether `job` runs and cannot be stopped (a cancel must let it finish)."""
    if job is None or job.status != JobStatus.RUNNING:
        return False
    try:
        return not job_type_get(job.type).cancellable
    except UnknownJobType:
        return False


def workflow_retry(*, workflow: Workflow) -> Workflow:
    """Resume a failed or cancelled workflow where it stopped; earlier steps stay as they are."""
    with transaction.atomic():
        locked, last = _locked(workflow)
        status = locked.status_of(last)
        if status not in (WorkflowStatus.FAILED, WorkflowStatus.CANCELLED) or last is None:
            raise JobStateError(
                "not_retryable",
                f"Only failed or cancelled workflows can be retried; it is {status}.",
            )
        locked.cancelled_at = None
        locked.save(update_fields=["cancelled_at"])
        if last.status == JobStatus.SUCCEEDED:
            # Cancelled between two steps: the next one is made now.
            assert last.position is not None
            step = WorkflowStep.objects.get(workflow=locked, position=last.position + 1)
            _make_step(locked, step, last.result)
        else:
            job_retry(job=last)
    return locked


def workflows_advance_stranded(
    *, window: timedelta = timedelta(hours=1), grace: timedelta = timedelta(seconds=30)
) -> int:
    """Make the next step of chains whose step succeeded without it; returns how many.

    The success path makes the next step in the same transaction, so this finds only successes
    recorded by a worker running code that predates workflows (a rolling deploy). Run by the
    reconciler's full sweeps (every tenant, every 10 minutes): steps that ended within `window`,
    and at least `grace` ago, so a success being committed right now is left to its own path.
    """
    now = timezone.now()
    next_job = Job.objects.filter(workflow=OuterRef("workflow"), position=OuterRef("position") + 1)
    stranded = list(
        Job.objects.filter(
            workflow__isnull=False,
            status=JobStatus.SUCCEEDED,
            finished_at__gt=now - window,
            finished_at__lt=now - grace,
            position__lt=F("workflow__step_count"),
            workflow__cancelled_at__isnull=True,
        )
        .exclude(Exists(next_job))
        .values_list("workflow_id", "position")[:1000]
    )
    made = 0
    for workflow_id, position in stranded:
        assert position is not None  # a workflow's job always has one
        with transaction.atomic():
            step = (
                WorkflowStep.objects.select_related("workflow")
                .select_for_update()
                .get(workflow_id=workflow_id, position=position + 1)
            )
            # Looked at again under the lock: a cancel or a retry may have come first.
            if (
                step.workflow.cancelled_at is not None
                or Job.objects.filter(workflow_id=workflow_id, position=position + 1).exists()
            ):
                continue
            previous = Job.objects.get(workflow_id=workflow_id, position=position)
            _make_step(step.workflow, step, previous.result)
            made += 1
    return made
