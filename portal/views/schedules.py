"""The schedules pages: list, create, edit, pause, resume, delete, and a schedule's runs.

Every write is a call to jobs.schedules.services, the API's own (validation of the type, its
arguments, the timing and the plan's limits lives there); every read goes through
jobs.schedules.selectors, so the next runs shown are the beat's own (jitter included).

Members manage schedules as admins do: the issue keeps keys, users and the plan from them, and
a schedule is a way to submit jobs, which members may.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from django.contrib import messages
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST
from saas_platform.lib.db import connection

from jobs.catalogue import JobArgsError, JobType, UnknownJobType, catalogue, job_type_get
from jobs.models import Schedule
from jobs.schedules.selectors import (
    schedule_get,
    schedule_next_runs,
    schedule_runs,
    schedules_all,
)
from jobs.schedules.services import (
    ScheduleError,
    schedule_create,
    schedule_delete,
    schedule_update,
    spec_of,
)
from jobs.schedules.timing import zone_names
from portal.access import portal_page
from portal.describe import timing_description
from portal.forms import ScheduleForm
from portal.schema_form import (
    SchemaField,
    fields_attach_errors,
    fields_fill,
    fields_parse,
    schema_fields,
)


@dataclass(frozen=True)
class ScheduleRow:
    schedule: Schedule
    description: str
    enabled: bool
    next_run: datetime | None


def _schedule_or_404(schedule_id: str) -> Schedule:
    schedule = schedule_get(schedule_id=schedule_id)
    if schedule is None:
        raise Http404("No such schedule.")
    return schedule


@portal_page()
def schedule_list_view(request: HttpRequest) -> HttpResponse:
    # Bounded by the plan's max_schedules, so one page.
    rows = []
    for schedule in schedules_all().order_by("name"):
        spec = spec_of(schedule)
        upcoming = schedule_next_runs(schedule)
        rows.append(
            ScheduleRow(
                schedule=schedule,
                description=timing_description(spec),
                enabled=spec.enabled,
                next_run=upcoming[0] if upcoming else None,
            )
        )
    return render(request, "portal/schedules/list.html", {"rows": rows})


@portal_page()
def schedule_types_view(request: HttpRequest) -> HttpResponse:
    job_types = [catalogue()[name] for name in sorted(catalogue())]
    return render(
        request,
        "portal/submit/catalogue.html",
        {
            "job_types": job_types,
            "heading": "New schedule: choose its job type",
            "url_name": "portal:schedule_create",
        },
    )


def _save(
    request: HttpRequest,
    *,
    job_type: JobType,
    form: ScheduleForm,
    fields: list[SchemaField],
    schedule: Schedule | None,
) -> tuple[Schedule | None, list[str]]:
    """Validate the posted form and call the service; the schedule, or the errors left over
    for no field (those for a field are on it)."""
    args = fields_parse(fields, request.POST)
    if not form.is_valid() or args is None:
        return None, []
    spec = form.spec(job_type=job_type.name, args=args)
    try:
        if schedule is None:
            return schedule_create(spec=spec), []
        changes = {
            name: getattr(spec, name) for name in spec.__dataclass_fields__ if name not in ("type",)
        }
        return schedule_update(schedule=schedule, changes=changes), []
    except JobArgsError as exc:
        return None, fields_attach_errors(fields, exc.details)
    except ScheduleError as exc:
        form.add_service_error(exc)
        return None, []


def _form_page(
    request: HttpRequest, page: _FormPage, *, errors: list[str], status: int
) -> HttpResponse:
    context = {**page.__dict__, "errors": errors, "zone_names": zone_names()}
    return render(request, "portal/schedules/form.html", context, status=status)


@dataclass
class _FormPage:
    job_type: JobType
    form: ScheduleForm
    fields: list[SchemaField]
    schedule: Schedule | None


def _job_type_or_404(name: str) -> JobType:
    try:
        return job_type_get(name)
    except UnknownJobType:
        raise Http404("No such job type.") from None


def _post(request: HttpRequest, page: _FormPage) -> HttpResponse:
    saved, errors = _save(
        request, job_type=page.job_type, form=page.form, fields=page.fields, schedule=page.schedule
    )
    if saved is None:
        return _form_page(request, page, errors=errors, status=400)
    messages.success(
        request,
        "The schedule was saved." if page.schedule else f"The schedule “{saved.name}” was created.",
    )
    return redirect("portal:schedule_detail", schedule_id=saved.pk)


@portal_page()
def schedule_create_view(request: HttpRequest, type_name: str) -> HttpResponse:
    job_type = _job_type_or_404(type_name)
    fields = schema_fields(job_type)
    if request.method == "POST":
        return _post(request, _FormPage(job_type, ScheduleForm(request.POST), fields, None))
    # A new schedule is read in the tenant's own time zone unless its admin picks another.
    form = ScheduleForm(initial={"timezone": connection.tenant.timezone})
    return _form_page(request, _FormPage(job_type, form, fields, None), errors=[], status=200)


@portal_page()
def schedule_edit_view(request: HttpRequest, schedule_id: str) -> HttpResponse:
    schedule = _schedule_or_404(schedule_id)
    job_type = _job_type_or_404(schedule.type)
    fields = schema_fields(job_type)
    if request.method == "POST":
        return _post(request, _FormPage(job_type, ScheduleForm(request.POST), fields, schedule))
    spec = spec_of(schedule)
    fields_fill(fields, spec.args)
    form = ScheduleForm(initial=ScheduleForm.initial_of(spec))
    return _form_page(request, _FormPage(job_type, form, fields, schedule), errors=[], status=200)


RUNS_SHOWN = 20


@portal_page()
def schedule_detail_view(request: HttpRequest, schedule_id: str) -> HttpResponse:
    schedule = _schedule_or_404(schedule_id)
    spec = spec_of(schedule)
    return render(
        request,
        "portal/schedules/detail.html",
        {
            "schedule": schedule,
            "spec": spec,
            "description": timing_description(spec),
            "next_runs": schedule_next_runs(schedule),
            "runs": schedule_runs(schedule, limit=RUNS_SHOWN),
            "runs_shown": RUNS_SHOWN,
        },
    )


def _set_enabled(request: HttpRequest, schedule_id: str, *, enabled: bool) -> HttpResponse:
    schedule = _schedule_or_404(schedule_id)
    try:
        schedule_update(schedule=schedule, changes={"enabled": enabled})
    except (ScheduleError, JobArgsError, UnknownJobType) as exc:
        # The schedule no longer passes validation (say, the plan's minimum interval rose).
        messages.error(request, f"Nothing changed: {exc} Edit the schedule to fix it.")
    else:
        messages.success(
            request,
            "The schedule runs again from now on (missed times are not made up)."
            if enabled
            else "The schedule is paused: it makes no jobs until resumed.",
        )
    return redirect("portal:schedule_detail", schedule_id=schedule.pk)


@require_POST
@portal_page()
def schedule_pause_view(request: HttpRequest, schedule_id: str) -> HttpResponse:
    return _set_enabled(request, schedule_id, enabled=False)


@require_POST
@portal_page()
def schedule_resume_view(request: HttpRequest, schedule_id: str) -> HttpResponse:
    return _set_enabled(request, schedule_id, enabled=True)


@require_POST
@portal_page()
def schedule_delete_view(request: HttpRequest, schedule_id: str) -> HttpResponse:
    schedule = _schedule_or_404(schedule_id)
    name = schedule.name
    schedule_delete(schedule=schedule)
    messages.success(request, f"The schedule “{name}” was deleted; the jobs it made stay.")
    return redirect("portal:schedules")
