"""Writes on schedules, in the active tenant: create, change, delete (the API and portal call
these). Every write validates the whole schedule as a submission would (the job type, its
arguments against the type's schema, the timing, the plan's limits) before anything is written,
and tells the beat after it commits.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from django.core.exceptions import ValidationError
from django.db import IntegrityError, connection, transaction
from django.utils import timezone
from django_celery_beat.models import (
    ClockedSchedule,
    CrontabSchedule,
    IntervalSchedule,
    PeriodicTask,
)
from saas_platform.lib.tenant_context import active_tenant

from billing.limits import tenant_limits
from jobs.catalogue import job_type_get
from jobs.models import MissedRuns, Overlap, Schedule
from jobs.schedules.changes import schedules_changed_on_commit
from jobs.schedules.monitors import MonitorError, monitor_slug_check
from jobs.schedules.selectors import periodic_task_cron
from jobs.schedules.timing import (
    Timing,
    TimingError,
    cron_fields,
    cron_parse,
    next_after,
    shortest_gap,
    zone_get,
)

# Not a Celery task: django-celery-beat's table needs a task name, and a stock beat reading a
# tenant's table must find nothing it could publish (no job type runs outside a Job row).
SCHEDULE_TASK_MARKER = "jobs.tenant-schedule"
MAX_JITTER_SECONDS = 3600
MAX_CATCH_UP_SECONDS = 86_400
MAX_RUN_AT_AHEAD = timedelta(days=365)


class ScheduleError(ValueError):
    """The schedule was refused; nothing was written. `code` names the reason (a 422)."""

    def __init__(self, code: str, message: str, details: Any = None) -> None:
        super().__init__(message)
        self.code = code
        self.details = details


@dataclass(frozen=True)
class ScheduleSpec:
    """Everything a schedule is; a PATCH is the stored spec with the given fields replaced."""

    name: str
    type: str
    args: dict[str, Any] = field(default_factory=dict)
    cron: str | None = None
    interval_seconds: int | None = None
    run_at: datetime | None = None
    timezone: str = "UTC"
    enabled: bool = True
    missed_runs: str = MissedRuns.RUN_ONCE
    catch_up_seconds: int = 3600
    overlap: str = Overlap.ALLOW
    jitter_seconds: int = 0
    monitor_slug: str = ""

    def timing(self, anchor: datetime | None = None) -> Timing:
        return Timing(
            tz=self.timezone,
            cron=self.cron,
            interval_seconds=self.interval_seconds,
            run_at=self.run_at,
            anchor=anchor,
        )


def _tenant() -> Any:
    tenant = active_tenant()
    if tenant is None:
        raise RuntimeError("schedules are written with a tenant active")
    return tenant


def _tenant_id() -> int:
    return int(_tenant().pk)


def _monitor_check(spec: ScheduleSpec, timing: Timing, *, schedule_id: int | None) -> None:
    if not spec.monitor_slug:
        return
    try:
        monitor_slug_check(spec.monitor_slug, tenant_slug=_tenant().schema_name, timing=timing)
    except MonitorError as exc:
        raise ScheduleError("invalid_monitor", str(exc)) from None
    others = Schedule.objects.filter(monitor_slug=spec.monitor_slug)
    if schedule_id is not None:
        others = others.exclude(pk=schedule_id)
    if others.exists():
        raise _monitor_taken()


def _validate(
    spec: ScheduleSpec, *, tenant_id: int, now: datetime, schedule_id: int | None = None
) -> dict[str, Any]:
    """Checks the whole spec; returns the arguments as the job type normalised them."""
    if not spec.name.strip():
        raise ScheduleError("invalid_name", "name must not be blank.")
    # Raises UnknownJobType / JobArgsError, which the API reports as it does for a submission.
    args = job_type_get(spec.type).validate_args(spec.args)
    given = [
        name for name in ("cron", "interval_seconds", "run_at") if getattr(spec, name) is not None
    ]
    if len(given) != 1:
        raise ScheduleError(
            "invalid_timing",
            "Give exactly one of cron, interval_seconds or run_at.",
            {"given": given},
        )
    try:
        zone_get(spec.timezone)
        if spec.cron is not None:
            cron_parse(spec.cron)
    except TimingError as exc:
        raise ScheduleError("invalid_timing", str(exc)) from None
    if spec.run_at is not None:
        if timezone.is_naive(spec.run_at):
            raise ScheduleError("invalid_timing", "run_at needs a time zone offset.")
        if spec.run_at - now > MAX_RUN_AT_AHEAD:
            raise ScheduleError("invalid_timing", "run_at is more than 365 days away.")
    if spec.interval_seconds is not None and spec.interval_seconds < 1:
        raise ScheduleError("invalid_timing", "interval_seconds must be at least 1.")
    timing = spec.timing(anchor=now)
    if spec.cron is not None and next_after(timing, now) is None:
        raise ScheduleError("invalid_timing", f"The cron expression {spec.cron!r} never fires.")
    if spec.missed_runs not in MissedRuns.values:
        raise ScheduleError("invalid_policy", f"missed_runs is one of {MissedRuns.values}.")
    if spec.overlap not in Overlap.values:
        raise ScheduleError("invalid_policy", f"overlap is one of {Overlap.values}.")
    if not 0 <= spec.catch_up_seconds <= MAX_CATCH_UP_SECONDS:
        raise ScheduleError(
            "invalid_policy", f"catch_up_seconds is between 0 and {MAX_CATCH_UP_SECONDS}."
        )
    if not 0 <= spec.jitter_seconds <= MAX_JITTER_SECONDS:
        raise ScheduleError(
            "invalid_policy", f"jitter_seconds is between 0 and {MAX_JITTER_SECONDS}."
        )
    limits = tenant_limits(tenant_id)
    gap = shortest_gap(timing, now)
    if gap is not None and gap < timedelta(seconds=limits.min_interval_seconds):
        raise ScheduleError(
            "interval_too_short",
            f"The {limits.plan} plan runs a schedule at most every "
            f"{limits.min_interval_seconds} s; this one runs every {gap.total_seconds():g} s.",
            {"min_interval_seconds": limits.min_interval_seconds, "plan": limits.plan},
        )
    _monitor_check(spec, timing, schedule_id=schedule_id)
    return args


def _timing_rows(spec: ScheduleSpec) -> dict[str, Any]:
    """The django-celery-beat schedule row the PeriodicTask points at (exactly one)."""
    rows: dict[str, Any] = {"interval": None, "crontab": None, "clocked": None, "one_off": False}
    if spec.interval_seconds is not None:
        rows["interval"], _ = IntervalSchedule.objects.get_or_create(
            every=spec.interval_seconds, period=IntervalSchedule.SECONDS
        )
    elif spec.cron is not None:
        rows["crontab"], _ = CrontabSchedule.objects.get_or_create(
            **cron_fields(spec.cron), timezone=spec.timezone
        )
    else:
        rows["clocked"] = ClockedSchedule.objects.create(clocked_time=spec.run_at)
        # django-celery-beat's requirement for a clocked task, and what it is: it runs once.
        rows["one_off"] = True
    return rows


def _starts_after(spec: ScheduleSpec, now: datetime) -> datetime:
    """What the beat counts as handled already: everything before now is not "missed", except a
    one-off whose time has passed, which runs at once (as a job with a past run_at does)."""
    if spec.run_at is not None and spec.run_at <= now:
        return spec.run_at - timedelta(microseconds=1)
    return now


def _name_taken() -> ScheduleError:
    return ScheduleError("name_taken", "Another schedule of this tenant has that name.")


def _monitor_taken() -> ScheduleError:
    return ScheduleError("monitor_taken", "Another schedule of this tenant has that monitor_slug.")


def _taken(exc: Exception) -> ScheduleError:
    """Which unique rule a concurrent write broke (the checks before it saw no clash)."""
    if "jobs_schedule_monitor_slug_unique" in str(exc):
        return _monitor_taken()
    return _name_taken()


def schedule_create(*, spec: ScheduleSpec) -> Schedule:
    """Validate and store a new schedule in the active tenant (the beat is told on commit)."""
    tenant_id = _tenant_id()
    now = timezone.now()
    args = _validate(spec, tenant_id=tenant_id, now=now)
    limits = tenant_limits(tenant_id)
    try:
        with transaction.atomic():
            # Counted under a lock (per schema, until commit), so two concurrent creates cannot
            # both take the last place.
            with connection.cursor() as cursor:
                cursor.execute(
                    "SELECT pg_advisory_xact_lock(hashtext(current_schema() || ':schedules'))"
                )
            if Schedule.objects.count() >= limits.schedules:
                raise ScheduleError(
                    "too_many_schedules",
                    f"The {limits.plan} plan allows {limits.schedules} schedules.",
                    {"max_schedules": limits.schedules, "plan": limits.plan},
                )
            task = PeriodicTask.objects.create(
                name=spec.name,
                task=SCHEDULE_TASK_MARKER,
                kwargs=json.dumps({"type": spec.type}),
                enabled=spec.enabled,
                **_timing_rows(spec),
            )
            schedule = Schedule.objects.create(
                periodic_task=task,
                name=spec.name,
                type=spec.type,
                args=args,
                timezone=spec.timezone,
                anchor=now,
                missed_runs=spec.missed_runs,
                catch_up_seconds=spec.catch_up_seconds,
                overlap=spec.overlap,
                jitter_seconds=spec.jitter_seconds,
                monitor_slug=spec.monitor_slug,
                last_due_at=_starts_after(spec, now),
            )
            schedules_changed_on_commit(tenant_id)
    except (IntegrityError, ValidationError) as exc:
        # django-celery-beat checks the unique name before saving; a race ends at the index.
        raise _taken(exc) from None
    return schedule


def spec_of(schedule: Schedule) -> ScheduleSpec:
    task = schedule.periodic_task
    return ScheduleSpec(
        name=schedule.name,
        type=schedule.type,
        args=schedule.args,
        cron=periodic_task_cron(task),
        interval_seconds=task.interval.every if task.interval is not None else None,
        run_at=task.clocked.clocked_time if task.clocked is not None else None,
        timezone=schedule.timezone,
        enabled=task.enabled,
        missed_runs=schedule.missed_runs,
        catch_up_seconds=schedule.catch_up_seconds,
        overlap=schedule.overlap,
        jitter_seconds=schedule.jitter_seconds,
        monitor_slug=schedule.monitor_slug,
    )


_TIMING_FIELDS = ("cron", "interval_seconds", "run_at", "timezone")


def schedule_update(*, schedule: Schedule, changes: dict[str, Any]) -> Schedule:
    """Apply a PATCH: the stored spec with `changes` replaced, validated whole.

    Giving one of cron / interval_seconds / run_at replaces the others. A change of timing or
    time zone starts the schedule afresh from now (the seed's
    `PeriodicTask.objects.update(last_run_at=None)`, done here): no catch-up of times computed
    under the old rules. Resuming a paused schedule also starts from now: a pause is not a miss.
    """
    tenant_id = _tenant_id()
    now = timezone.now()
    current = spec_of(schedule)
    if any(name in changes for name in ("cron", "interval_seconds", "run_at")):
        current = replace(current, cron=None, interval_seconds=None, run_at=None)
    spec = replace(current, **changes)
    args = _validate(spec, tenant_id=tenant_id, now=now, schedule_id=schedule.pk)
    retimed = any(
        getattr(spec, name) != getattr(spec_of(schedule), name) for name in _TIMING_FIELDS
    )
    resumed = spec.enabled and not schedule.periodic_task.enabled
    try:
        with transaction.atomic():
            task = PeriodicTask.objects.select_for_update().get(pk=schedule.periodic_task_id)
            task.name = spec.name
            task.enabled = spec.enabled
            task.kwargs = json.dumps({"type": spec.type})
            if retimed:
                for name, value in _timing_rows(spec).items():
                    setattr(task, name, value)
                task.last_run_at = None
            task.save()
            schedule.name = spec.name
            schedule.type = spec.type
            schedule.args = args
            schedule.timezone = spec.timezone
            schedule.missed_runs = spec.missed_runs
            schedule.catch_up_seconds = spec.catch_up_seconds
            schedule.overlap = spec.overlap
            schedule.jitter_seconds = spec.jitter_seconds
            schedule.monitor_slug = spec.monitor_slug
            if retimed:
                schedule.anchor = now
            if retimed or resumed:
                schedule.last_due_at = _starts_after(spec, now)
            schedule.periodic_task = task
            schedule.save()
            schedules_changed_on_commit(tenant_id)
    except (IntegrityError, ValidationError) as exc:
        raise _taken(exc) from None
    return schedule


def schedule_delete(*, schedule: Schedule) -> None:
    """Delete the schedule and its occurrences; the jobs it made stay and keep its id."""
    tenant_id = _tenant_id()
    with transaction.atomic():
        task = schedule.periodic_task
        schedule.delete()
        task.delete()
        schedules_changed_on_commit(tenant_id)
