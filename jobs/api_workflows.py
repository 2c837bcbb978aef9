"""Workflow endpoints (thin adapters over jobs.services.workflows and jobs.selectors).

Conventions as for jobs: 202 on submission, Idempotency-Key per tenant (a key space of
workflows' own), 404 for another tenant's workflow, 409 for an action the state refuses.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from django.http import HttpRequest
from ninja import Field, Router, Schema, Status
from saas_platform.lib.api_docs import route_doc
from saas_platform.lib.api_errors import ApiError

from jobs.api import (
    _JOB_TYPE_NAMES,
    IDEMPOTENCY_KEY_HEADER,
    JobOut,
    Strict,
    _admit,
    _idempotency_key,
    _submit_error,
    _submitted_by,
)
from jobs.catalogue import JobArgsError, UnknownJobType
from jobs.models import Workflow
from jobs.selectors import WorkflowDetail, workflow_get, workflow_get_with_steps
from jobs.services.submission import JobSubmitError
from jobs.services.transitions import JobStateError
from jobs.services.workflows import (
    MAX_STEPS,
    MIN_STEPS,
    StepRequest,
    workflow_cancel,
    workflow_retry,
    workflow_submit,
)
from tenants.auth import require_scope

router = Router(tags=["workflows"])


class StepIn(Strict):
    type: str = Field(
        ...,
        min_length=1,
        max_length=100,
        description="A job type name, from GET /job-types.",
        json_schema_extra={"enum": _JOB_TYPE_NAMES},
    )
    args: dict[str, Any] = Field(
        default_factory=dict,
        description="The step's arguments. The first step's are checked against the type's "
        "`args_schema`; a later step's against its `step_args_schema` without `input`, which the "
        "platform sets to the previous step's result (giving it is a 422).",
    )


class WorkflowIn(Strict):
    """A chain: each step runs after the previous one succeeded, with its result as `input`.
    Refused as a whole (422 naming the step in `details.step`) if any step is: an unknown type,
    arguments that do not fit, a later step whose type takes no input, or one whose input type
    does not match what the step before it returns."""

    steps: list[StepIn] = Field(..., min_length=MIN_STEPS, max_length=MAX_STEPS)


class StepOut(Schema):
    position: int = Field(description="1-based.")
    type: str
    args: dict[str, Any] = Field(description="As submitted, without `input`.")
    status: str = Field(
        description="The step's job's status; `pending` before it has a job while the workflow "
        "runs, `cancelled` once the workflow has failed or been cancelled before reaching it."
    )
    job: JobOut | None = Field(None, description="Made when the previous step succeeded.")


class WorkflowOut(Schema):
    id: UUID
    status: str = Field(description="running, succeeded, failed or cancelled")
    submitted_by: str
    created_at: datetime
    finished_at: datetime | None = None
    cancelled_at: datetime | None = Field(
        None,
        description="When a cancel was accepted. A running step whose type is not cancellable "
        "finishes first: the workflow reads `running` until then, its later steps `cancelled`.",
    )
    result: Any = Field(None, description="The last step's result, once it succeeded.")
    steps: list[StepOut]

    @staticmethod
    def from_detail(detail: WorkflowDetail) -> dict[str, Any]:
        last = next((view.job for view in reversed(detail.steps) if view.job), None)
        final = detail.status != "running"
        return {
            "id": detail.workflow.id,
            "status": detail.status,
            "submitted_by": detail.workflow.submitted_by,
            "created_at": detail.workflow.created_at,
            "finished_at": (last.finished_at or detail.workflow.cancelled_at) if final and last
            else None,
            "cancelled_at": detail.workflow.cancelled_at,
            "result": last.result if detail.status == "succeeded" and last else None,
            "steps": [
                {
                    "position": view.step.position,
                    "type": view.step.type,
                    "args": view.step.args,
                    "status": view.status,
                    "job": JobOut.from_job(view.job) if view.job else None,
                }
                for view in detail.steps
            ],
        }  # fmt: skip


def _out(workflow: Workflow) -> dict[str, Any]:
    detail = workflow_get_with_steps(workflow_id=str(workflow.id))
    assert detail is not None  # it was just read or written in this tenant
    return WorkflowOut.from_detail(detail)


def _workflow_or_404(workflow_id: str) -> Workflow:
    workflow = workflow_get(workflow_id=workflow_id)
    if workflow is None:
        raise ApiError(404, "not_found", "No such workflow.")
    return workflow


@router.post(
    "/workflows",
    summary="Submit a workflow (a chain of jobs)",
    **route_doc({202: WorkflowOut}, 409, 429, body=True, parameters=[IDEMPOTENCY_KEY_HEADER]),
)
def submit_workflow(request: HttpRequest, payload: WorkflowIn) -> Status[dict[str, Any]]:
    require_scope(request, "jobs:write")
    idempotency_key = _idempotency_key(request)
    # Each step becomes a job: the chain costs its steps' submissions, all or none.
    _admit(
        request,
        jobs=len(payload.steps),
        idempotency_key=idempotency_key,
        batch=False,
        workflow=True,
    )
    try:
        workflow = workflow_submit(
            steps=[StepRequest(type=step.type, args=step.args) for step in payload.steps],
            submitted_by=_submitted_by(request),
            idempotency_key=idempotency_key,
        )
    except (JobSubmitError, UnknownJobType, JobArgsError) as exc:
        raise _submit_error(exc) from None
    return Status(202, _out(workflow))


@router.get("/workflows/{workflow_id}", summary="One workflow", **route_doc({200: WorkflowOut}))
def get_workflow(request: HttpRequest, workflow_id: str) -> dict[str, Any]:
    require_scope(request, "jobs:read")
    detail = workflow_get_with_steps(workflow_id=workflow_id)
    if detail is None:
        raise ApiError(404, "not_found", "No such workflow.")
    return WorkflowOut.from_detail(detail)


@router.post(
    "/workflows/{workflow_id}/cancel",
    summary="Cancel a running workflow: its unfinished step and the rest",
    **route_doc({200: WorkflowOut}, 409),
)
def cancel_workflow(request: HttpRequest, workflow_id: str) -> dict[str, Any]:
    require_scope(request, "jobs:write")
    try:
        workflow = workflow_cancel(workflow=_workflow_or_404(workflow_id))
    except JobStateError as exc:
        raise ApiError(409, exc.code, str(exc)) from None
    return _out(workflow)


@router.post(
    "/workflows/{workflow_id}/retry",
    summary="Resume a failed or cancelled workflow at the step that stopped it",
    **route_doc({202: WorkflowOut}, 409),
)
def retry_workflow(request: HttpRequest, workflow_id: str) -> Status[dict[str, Any]]:
    require_scope(request, "jobs:write")
    try:
        workflow = workflow_retry(workflow=_workflow_or_404(workflow_id))
    except JobStateError as exc:
        raise ApiError(409, exc.code, str(exc)) from None
    return Status(202, _out(workflow))
