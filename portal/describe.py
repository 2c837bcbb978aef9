"""Schedules in words: a crontab described by cron-descriptor, an interval in minutes or hours."""

from __future__ import annotations

from cron_descriptor import CasingTypeEnum, ExpressionDescriptor, Options

from jobs.schedules.services import ScheduleSpec
from jobs.schedules.timing import zone_get


def _cron_options() -> Options:
    options = Options()
    # The portal shows times as 14:30 everywhere; Celery's crontab counts Sunday as day 0,
    # which is cron-descriptor's default too.
    options.use_24hour_time_format = True
    options.casing_type = CasingTypeEnum.Sentence
    return options


def cron_description(expression: str) -> str:
    try:
        return str(ExpressionDescriptor(expression, _cron_options()).get_description())
    except Exception:  # a description is a nicety: the beat's own parser decides what runs
        return ""


_UNITS = ((86_400, "day"), (3600, "hour"), (60, "minute"))


def interval_description(seconds: int) -> str:
    for size, unit in _UNITS:
        if seconds >= size and seconds % size == 0:
            count = seconds // size
            return f"Every {unit}" if count == 1 else f"Every {count} {unit}s"
    return "Every second" if seconds == 1 else f"Every {seconds} seconds"


def timing_description(spec: ScheduleSpec) -> str:
    """What the schedule's timing means, in the schedule's time zone."""
    if spec.cron is not None:
        described = cron_description(spec.cron)
        return f"{described} ({spec.timezone})" if described else spec.cron
    if spec.interval_seconds is not None:
        return interval_description(spec.interval_seconds)
    assert spec.run_at is not None
    when = spec.run_at.astimezone(zone_get(spec.timezone))
    return f"Once, at {when:%Y-%m-%d %H:%M} ({spec.timezone})"
