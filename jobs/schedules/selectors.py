"""Reads on schedules, in the active tenant's schema."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from django.db.models import QuerySet
from django.utils import timezone
from django_celery_beat.models import PeriodicTask

from jobs.models import Schedule, ScheduleRun
from jobs.schedules.timing import Timing, jitter_offset, next_after, upcoming

PREVIEW_COUNT = 5


def schedules_all() -> QuerySet[Schedule]:
    return Schedule.objects.select_related(
        "periodic_task__interval", "periodic_task__crontab", "periodic_task__clocked"
    )


def schedule_get(*, schedule_id: str | int) -> Schedule | None:
    try:
        key = int(schedule_id)
    except (TypeError, ValueError):
        return None  # not an id we could have issued: the same 404 as a missing one
    return schedules_all().filter(pk=key).first()


def periodic_task_cron(task: PeriodicTask) -> str | None:
    """The five-field expression of a PeriodicTask's crontab (None for another kind)."""
    c = task.crontab
    if c is None:
        return None
    return f"{c.minute} {c.hour} {c.day_of_month} {c.month_of_year} {c.day_of_week}"


def schedule_timing(schedule: Schedule) -> Timing:
    task = schedule.periodic_task
    return Timing(
        tz=schedule.timezone,
        cron=periodic_task_cron(task),
        interval_seconds=task.interval.every if task.interval is not None else None,
        run_at=task.clocked.clocked_time if task.clocked is not None else None,
        anchor=schedule.anchor,
    )


def fire_time(schedule: Schedule, timing: Timing, due: datetime) -> datetime:
    """When the beat runs the occurrence due at `due`: its due time plus the schedule's jitter."""
    return due + jitter_offset(schedule.pk, schedule.jitter_seconds, due, next_after(timing, due))


def schedule_next_runs(schedule: Schedule, *, now: datetime | None = None) -> list[datetime]:
    """The next PREVIEW_COUNT times the beat will run it, in the schedule's zone ([] if paused).

    The same functions the beat uses (jobs.schedules.timing), jitter included.
    """
    if not schedule.periodic_task.enabled:
        return []
    now = now or timezone.now()
    timing = schedule_timing(schedule)
    start = max(schedule.last_due_at or now, now)
    zone = timing.zone
    return [
        fire_time(schedule, timing, due).astimezone(zone)
        for due in upcoming(timing, start, PREVIEW_COUNT)
    ]


@dataclass(frozen=True)
class LastRun:
    due_at: datetime
    outcome: str
    job_id: str | None


def schedule_last_run(schedule: Schedule) -> LastRun | None:
    run = ScheduleRun.objects.filter(schedule=schedule).order_by("-due_at").first()
    if run is None:
        return None
    return LastRun(run.due_at, run.outcome, str(run.job_id) if run.job_id else None)


def schedule_runs(schedule: Schedule, *, limit: int = 20) -> list[ScheduleRun]:
    """The schedule's latest occurrences, newest first, with their jobs (the portal's "runs").

    The unique (schedule, due_at) index serves it, so the cost follows `limit`, not the
    schedule's history.
    """
    return list(
        ScheduleRun.objects.filter(schedule=schedule)
        .select_related("job")
        .order_by("-due_at")[:limit]
    )
