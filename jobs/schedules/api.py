"""Schedule endpoints (CONTRACT.md): thin adapters over jobs.schedules.services and selectors."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from django.http import HttpRequest
from ninja import Field, Router, Schema, Status
from pydantic import StrictBool, field_validator
from saas_platform.lib.api_docs import route_doc
from saas_platform.lib.api_errors import ApiError
from saas_platform.lib.db import connection

from jobs.api import Strict, _submit_error
from jobs.catalogue import JobArgsError, UnknownJobType
from jobs.models import Schedule
from jobs.schedules.selectors import (
    schedule_get,
    schedule_last_run,
    schedule_next_runs,
    schedules_all,
)
from jobs.schedules.services import (
    MAX_CATCH_UP_SECONDS,
    MAX_JITTER_SECONDS,
    ScheduleError,
    ScheduleSpec,
    schedule_create,
    schedule_delete,
    schedule_update,
    spec_of,
)
from tenants.auth import require_scope

router = Router(tags=["schedules"])

_CRON_DOC = (
    "Five fields, `minute hour day-of-month month day-of-week`, read as Celery's crontab reads "
    "them (day of month AND day of week; names such as `sun` or `thu,fri`). One that never fires "
    "(such as `* * 31 2 *`) is a 422."
)


class _Policies(Strict):
    missed_runs: Literal["run_once", "skip"] | None = Field(
        None,
        description="Occurrences missed while the beat was down or the tenant suspended: the "
        "latest runs once if within catch_up_seconds (`run_once`, the default), or none (`skip`).",
    )
    catch_up_seconds: int | None = Field(None, ge=0, le=MAX_CATCH_UP_SECONDS)
    overlap: Literal["allow", "skip", "buffer_one"] | None = Field(
        None,
        description="While the previous job has not finished: run anyway (`allow`, the "
        "default, as Celery beat does), skip the occurrence, or hold one until it ends.",
    )
    jitter_seconds: int | None = Field(
        None,
        ge=0,
        le=MAX_JITTER_SECONDS,
        description="Fire up to this long after the due time: a fixed fraction per schedule, "
        "never reaching the next occurrence.",
    )

    interval_seconds: int | None = Field(None, ge=1, description="Every this many seconds.")
    monitor_slug: str | None = Field(
        None,
        max_length=50,
        pattern=r"^([a-z0-9][a-z0-9_-]*)?$",
        description="Report each run to the platform's Sentry Crons as the monitor "
        '`<tenant slug>-<monitor_slug>` (lowercase letters, digits, `-`, `_`); `""` for none. '
        "Only for cron schedules restricting at most one of day of month and day of week, and "
        "intervals of whole minutes.",
    )

    @field_validator("catch_up_seconds", "jitter_seconds", "interval_seconds", mode="before")
    @classmethod
    def _a_json_number(cls, value: Any) -> Any:
        if isinstance(value, bool | str):
            raise ValueError("must be a JSON number")
        return value


class _Timing(_Policies):
    cron: str | None = Field(None, min_length=1, max_length=200, description=_CRON_DOC)
    run_at: datetime | None = Field(
        None, description="Once, at this time (ISO 8601 with an offset)."
    )
    timezone: str | None = Field(
        None,
        max_length=64,
        description="IANA zone the cron is read in and times are shown in; default: the "
        "tenant's time zone.",
    )
    # Strict: JSON true or false only, as the document says (not 0, 1 or "yes").
    enabled: StrictBool | None = None

    @field_validator("run_at", mode="before")
    @classmethod
    def _a_json_string(cls, value: Any) -> Any:
        if value is not None and not isinstance(value, str):
            raise ValueError("must be an ISO 8601 string")
        return value


class ScheduleIn(_Timing):
    """A new schedule: exactly one of cron / interval_seconds / run_at."""

    name: str = Field(..., min_length=1, max_length=200)
    type: str = Field(..., min_length=1, max_length=100, description="A job type name.")
    args: dict[str, Any] = Field(default_factory=dict)


class SchedulePatch(_Timing):
    """Only the fields given change; giving one of cron / interval_seconds / run_at replaces
    the others."""

    name: str | None = Field(None, min_length=1, max_length=200)
    type: str | None = Field(None, min_length=1, max_length=100)
    args: dict[str, Any] | None = None


class LastRunOut(Schema):
    due_at: datetime
    outcome: str = Field(description="submitted, skipped_overlap, buffered or failed")
    job: str | None = None


class ScheduleOut(Schema):
    id: int
    name: str
    type: str
    args: dict[str, Any]
    cron: str | None = None
    interval_seconds: int | None = None
    run_at: datetime | None = None
    timezone: str
    enabled: bool
    missed_runs: str
    catch_up_seconds: int
    overlap: str
    jitter_seconds: int
    monitor_slug: str = Field(description='The Sentry Crons monitor; "" for none.')
    next_runs: list[datetime] = Field(description="Up to 5, in the schedule's zone.")
    last_run_at: datetime | None = None
    last_run: LastRunOut | None = None
    last_job: str | None = None
    created_at: datetime


class SchedulePageOut(Schema):
    items: list[ScheduleOut]


def _document(schedule: Schedule, *, detail: bool = True) -> dict[str, Any]:
    spec = spec_of(schedule)
    last = schedule_last_run(schedule) if detail else None
    return {
        "id": schedule.pk,
        "name": spec.name,
        "type": spec.type,
        "args": spec.args,
        "cron": spec.cron,
        "interval_seconds": spec.interval_seconds,
        "run_at": spec.run_at,
        "timezone": spec.timezone,
        "enabled": spec.enabled,
        "missed_runs": spec.missed_runs,
        "catch_up_seconds": spec.catch_up_seconds,
        "overlap": spec.overlap,
        "jitter_seconds": spec.jitter_seconds,
        "monitor_slug": spec.monitor_slug,
        "next_runs": [when.isoformat() for when in schedule_next_runs(schedule)],
        "last_run_at": schedule.periodic_task.last_run_at,
        "last_run": (
            {"due_at": last.due_at, "outcome": last.outcome, "job": last.job_id} if last else None
        ),
        "last_job": str(schedule.last_job_id) if schedule.last_job_id else None,
        "created_at": schedule.created_at,
    }


def _refused(exc: Exception) -> ApiError:
    if isinstance(exc, ScheduleError):
        return ApiError(422, exc.code, str(exc), exc.details)
    return _submit_error(exc)


def _or_404(schedule_id: str) -> Schedule:
    schedule = schedule_get(schedule_id=schedule_id)
    if schedule is None:
        raise ApiError(404, "not_found", "No such schedule.")
    return schedule


def _reloaded(schedule: Schedule) -> Schedule:
    found = schedule_get(schedule_id=schedule.pk)
    assert found is not None
    return found


_REFUSALS = (ScheduleError, UnknownJobType, JobArgsError)


@router.get("/schedules", summary="This tenant's schedules", **route_doc({200: SchedulePageOut}))
def list_schedules(request: HttpRequest) -> dict[str, Any]:
    require_scope(request, "schedules:read")
    # Bounded by the plan's max_schedules, so one page.
    return {"items": [_document(s, detail=False) for s in schedules_all().order_by("id")]}


@router.post("/schedules", summary="Create a schedule", **route_doc({201: ScheduleOut}, body=True))
def create_schedule(request: HttpRequest, payload: ScheduleIn) -> Status[dict[str, Any]]:
    require_scope(request, "schedules:write")
    given = payload.model_dump(exclude_none=True)
    given.setdefault("timezone", connection.tenant.timezone)
    try:
        schedule = schedule_create(spec=ScheduleSpec(**given))
    except _REFUSALS as exc:
        raise _refused(exc) from None
    return Status(201, _document(_reloaded(schedule)))


@router.get("/schedules/{schedule_id}", summary="One schedule", **route_doc({200: ScheduleOut}))
def get_schedule(request: HttpRequest, schedule_id: str) -> dict[str, Any]:
    require_scope(request, "schedules:read")
    return _document(_or_404(schedule_id))


@router.patch(
    "/schedules/{schedule_id}",
    summary="Change a schedule",
    **route_doc({200: ScheduleOut}, body=True),
)
def patch_schedule(
    request: HttpRequest, schedule_id: str, payload: SchedulePatch
) -> dict[str, Any]:
    require_scope(request, "schedules:write")
    schedule = _or_404(schedule_id)
    # Fields sent as null mean "not given", as in the create body.
    changes = payload.model_dump(exclude_unset=True, exclude_none=True)
    try:
        schedule = schedule_update(schedule=schedule, changes=changes)
    except _REFUSALS as exc:
        raise _refused(exc) from None
    return _document(_reloaded(schedule))


@router.delete("/schedules/{schedule_id}", summary="Delete a schedule", **route_doc({204: None}))
def delete_schedule(request: HttpRequest, schedule_id: str) -> Status[None]:
    require_scope(request, "schedules:write")
    schedule_delete(schedule=_or_404(schedule_id))
    return Status(204, None)
