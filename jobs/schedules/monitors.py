"""Sentry Crons for tenant schedules: which schedules can have a monitor, what Sentry is told
about it, and the check-ins of their jobs (jobs.observed calls `checkin_begun` and
`checkin_ended` from the worker; nothing is sent unless SENTRY_DSN is set).

- A schedule's `monitor_slug` is the tenant's own name for it. Every tenant shares the platform's
  Sentry project, so Sentry sees `<tenant slug>-<monitor_slug>`: a tenant slug holds no hyphen,
  so no tenant can name another tenant's monitor.
- Each check-in carries the monitor's config (Sentry creates or updates the monitor from it):
  the schedule's crontab or interval and its time zone, a margin for the jitter and the beat's
  and dispatcher's delays, and a maximum run time covering every attempt and backoff. Only a
  schedule Sentry can express can have a monitor (whole minutes, a cron read the same way).
- One check-in per job, its id derived from the job's id: every attempt, on any worker, reports
  on the same check-in. An attempt that starts sends `in_progress`, the job's success `ok`, its
  final failure `error`; a retried attempt sends nothing (the check-in stays in progress).
- A check-in holds the slug, the status and the ids: no tags, arguments or results (the SDK
  strips the scope from check-ins, and jobs.observed sends nothing else).
"""

from __future__ import annotations

import math
import re
import uuid
from typing import TYPE_CHECKING, Literal

import sentry_sdk
from sentry_sdk.crons import capture_checkin

from jobs.catalogue import job_type_get
from jobs.schedules.selectors import schedule_get, schedule_timing
from jobs.schedules.timing import Timing, cron_fields

if TYPE_CHECKING:
    from sentry_sdk._types import MonitorConfig, MonitorConfigSchedule

    from jobs.models import Schedule

# Sentry's limit on a monitor slug, and the characters it keeps (it slugifies the rest).
SENTRY_SLUG_MAX = 50
_SLUG = re.compile(r"^[a-z0-9][a-z0-9_-]*$")
# Minutes after the due time before Sentry calls a run missed, beyond the schedule's jitter: the
# beat's tick, the dispatcher's turn and a queue that is not empty.
_MARGIN_MINUTES = 2
# Sentry's ceiling for max_runtime (28 days), in minutes.
_MAX_RUNTIME_CAP = 28 * 24 * 60

CheckinStatus = Literal["in_progress", "ok", "error"]


class MonitorError(ValueError):
    """A monitor slug the schedule cannot have; the message says why."""


def sentry_slug(tenant_slug: str, monitor_slug: str) -> str:
    return f"{tenant_slug}-{monitor_slug}"


def monitor_slug_check(monitor_slug: str, *, tenant_slug: str, timing: Timing) -> None:
    """Raises MonitorError unless the schedule can report to Sentry Crons as this monitor."""
    room = SENTRY_SLUG_MAX - len(tenant_slug) - 1
    if not _SLUG.match(monitor_slug) or len(monitor_slug) > room:
        raise MonitorError(
            f"monitor_slug is 1 to {room} characters: a lowercase letter or digit, then "
            "lowercase letters, digits, '-' or '_'."
        )
    if timing.run_at is not None:
        raise MonitorError("A one-off (run_at) schedule cannot have a monitor.")
    if timing.interval_seconds is not None and timing.interval_seconds % 60:
        raise MonitorError("Sentry Crons counts in minutes: the interval must be whole minutes.")
    if timing.cron is not None:
        fields = cron_fields(timing.cron)
        if fields["day_of_month"] != "*" and fields["day_of_week"] != "*":
            # Celery's crontab needs both to match; a standard cron (Sentry's) either.
            raise MonitorError(
                "A cron restricting both day of month and day of week is read differently by "
                "Sentry; restrict one of them to have a monitor."
            )


def _schedule_config(timing: Timing) -> MonitorConfigSchedule:
    if timing.cron is not None:
        return {"type": "crontab", "value": timing.cron}
    assert timing.interval_seconds is not None  # monitor_slug_check allows nothing else
    return {"type": "interval", "value": timing.interval_seconds // 60, "unit": "minute"}


def monitor_config(schedule: Schedule) -> MonitorConfig:
    """What Sentry is told of the schedule's monitor, with each in-progress check-in."""
    job_type = job_type_get(schedule.type)
    backoffs = sum(job_type.retry_countdown(n) for n in range(1, job_type.max_attempts))
    budget = job_type.time_limit_seconds * job_type.max_attempts + backoffs
    return {
        "schedule": _schedule_config(schedule_timing(schedule)),
        "timezone": schedule.timezone,
        "checkin_margin": _MARGIN_MINUTES + math.ceil(schedule.jitter_seconds / 60),
        "max_runtime": min(_MAX_RUNTIME_CAP, max(1, math.ceil(budget / 60))),
    }


def _checkin_id(job_id: str) -> str:
    return uuid.UUID(job_id).hex


def checkins_enabled() -> bool:
    return sentry_sdk.get_client().is_active()


def checkin_begun(*, tenant_slug: str, monitor_slug: str, schedule_id: int, job_id: str) -> None:
    """An attempt of a monitored schedule's job starts (one query: the schedule's timing)."""
    schedule = schedule_get(schedule_id=schedule_id)
    config = None
    if schedule is not None:  # deleted since: the check-in without the monitor's config
        config = monitor_config(schedule)
    capture_checkin(
        monitor_slug=sentry_slug(tenant_slug, monitor_slug),
        check_in_id=_checkin_id(job_id),
        status="in_progress",
        monitor_config=config,
    )


def checkin_ended(
    *, tenant_slug: str, monitor_slug: str, job_id: str, status: CheckinStatus
) -> None:
    capture_checkin(
        monitor_slug=sentry_slug(tenant_slug, monitor_slug),
        check_in_id=_checkin_id(job_id),
        status=status,
    )
