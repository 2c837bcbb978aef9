"""When a schedule fires. The API's preview and the beat both call `next_after`, so the preview
never shows a time the beat will not run.

Cron semantics are Celery's own: `celery.schedules.crontab` finds the next matching wall-clock
time (day of month AND day of week, as Celery does). It is asked in wall-clock time (naive local
times presented as UTC), and the time zone is applied afterwards with two rules (documented in the
README, tested in tests/test_schedule_timing.py):

- a wall time that does not exist (spring forward, 02:30 in Europe/Berlin on the last Sunday of
  March) runs at the first valid instant after it, the moment the clocks jump (03:00 CEST); every
  missing wall time of that gap collapses into that one run;
- a wall time that occurs twice (fall back) runs once, at its first occurrence (the earlier
  offset, CEST): the second pass through the repeated hour fires nothing.

Interval schedules fire on a grid, `anchor + k * interval` (k >= 1), in absolute time, so DST does
not move them and every beat computes the same due times for the occurrence key.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from celery.schedules import crontab

# A minute-level cron passes at most 60 repeated or missing wall times at a DST change; a cron
# that finds no instant in this many steps is treated as never firing.
_MAX_STEPS = 10_000
# A cron must fire within this horizon to be accepted (Feb 29 fires at most 8 years apart).
NEVER_HORIZON = timedelta(days=366 * 9)
CRON_FIELDS = ("minute", "hour", "day_of_month", "month_of_year", "day_of_week")


class TimingError(ValueError):
    """A schedule's timing that cannot work; the message says why."""


@dataclass(frozen=True)
class Timing:
    """Exactly one of cron / interval_seconds / run_at is set."""

    tz: str = "UTC"
    cron: str | None = None
    interval_seconds: int | None = None
    run_at: datetime | None = None
    anchor: datetime | None = None

    @property
    def zone(self) -> ZoneInfo:
        return zone_get(self.tz)


def zone_get(name: str) -> ZoneInfo:
    if name not in _zone_names():
        raise TimingError(f"Unknown time zone {name!r}: use an IANA name such as Europe/Berlin.")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise TimingError(f"Unknown time zone {name!r}.") from exc


_ZONES: frozenset[str] | None = None


def _zone_names() -> frozenset[str]:
    global _ZONES
    if _ZONES is None:
        _ZONES = frozenset(available_timezones()) | {"UTC"}
    return _ZONES


def zone_names() -> list[str]:
    """Every time zone a schedule may use, sorted (the portal offers them as one types)."""
    return sorted(_zone_names())


def cron_fields(expression: str) -> dict[str, str]:
    """The five fields of `minute hour day-of-month month day-of-week`, by crontab's names."""
    parts = expression.split()
    if len(parts) != 5:
        raise TimingError(
            "A cron expression has five fields: minute hour day-of-month month day-of-week."
        )
    return dict(zip(CRON_FIELDS, parts, strict=True))


@functools.lru_cache(maxsize=4096)
def cron_parse(expression: str) -> crontab:
    """Celery's crontab for the expression; TimingError for one Celery refuses."""
    try:
        return crontab(**cron_fields(expression))
    except (ValueError, TypeError, KeyError, IndexError) as exc:
        raise TimingError(f"Invalid cron expression {expression!r}: {exc}") from None


def _wall_next(schedule: crontab, wall: datetime) -> datetime:
    """The first wall-clock time after `wall` (naive) that the crontab matches, as Celery's beat
    computes it (remaining_delta), with naive times presented as UTC so no zone interferes."""
    start, delta, _ = schedule.remaining_delta(wall.replace(tzinfo=UTC), tz=UTC)
    found: datetime = start + delta
    return found.replace(tzinfo=None)


def wall_to_instant(wall: datetime, zone: ZoneInfo) -> datetime:
    """The instant a wall time (naive) stands for in `zone`, by the DST rules above."""
    first = wall.replace(tzinfo=zone, fold=0)
    if first.astimezone(UTC).astimezone(zone).replace(tzinfo=None) == wall:
        return first.astimezone(UTC)  # exists; when repeated, fold=0 is its first occurrence
    # In a gap: the clocks jumped between the two readings of `wall` (fold=1 reads it with the
    # later offset, so it is the earlier instant). Find the jump to the second.
    low = wall.replace(tzinfo=zone, fold=1).astimezone(UTC)
    high = first.astimezone(UTC)
    if low > high:
        low, high = high, low
    before = low.astimezone(zone).utcoffset()
    while high - low > timedelta(seconds=1):
        middle = low + (high - low) / 2
        if middle.astimezone(zone).utcoffset() == before:
            low = middle
        else:
            high = middle
    return high.replace(microsecond=0)


# Schedules sharing a cron and a zone share their due times, so the beat, which asks for the
# time after each one's last due time, asks the same question many times over: at 100,000
# entries this cache is most of the cold start's speed.
@functools.lru_cache(maxsize=65_536)
def _cron_after(cron: str, tz: str, after: datetime) -> datetime | None:
    schedule = cron_parse(cron)
    zone = zone_get(tz)
    wall = after.astimezone(zone).replace(tzinfo=None)
    for _ in range(_MAX_STEPS):
        try:
            wall = _wall_next(schedule, wall)
        except RuntimeError:
            return None  # Celery's "unable to rollover": a date that never comes (Feb 31)
        if wall - after.replace(tzinfo=None) > NEVER_HORIZON + timedelta(days=2):
            return None
        instant = wall_to_instant(wall, zone)
        if instant > after:
            return instant
    return None


def next_after(timing: Timing, after: datetime) -> datetime | None:
    """The first due time strictly after `after` (aware), in UTC; None when there is none."""
    if timing.cron is not None:
        return _cron_after(timing.cron, timing.tz, after)
    if timing.interval_seconds is not None:
        assert timing.anchor is not None
        step = timedelta(seconds=timing.interval_seconds)
        if after < timing.anchor:
            return timing.anchor + step
        passed = (after - timing.anchor) // step
        return (timing.anchor + (passed + 1) * step).astimezone(UTC)
    if timing.run_at is not None:
        return timing.run_at.astimezone(UTC) if timing.run_at > after else None
    raise TimingError("A schedule needs cron, interval_seconds or run_at.")


def latest_until(timing: Timing, due: datetime, now: datetime) -> datetime:
    """The last due time at or before `now`, starting from the due time `due` (<= now)."""
    if timing.interval_seconds is not None:
        assert timing.anchor is not None
        step = timedelta(seconds=timing.interval_seconds)
        return (timing.anchor + ((now - timing.anchor) // step) * step).astimezone(UTC)
    latest = due
    for _ in range(_MAX_STEPS):
        following = next_after(timing, latest)
        if following is None or following > now:
            return latest
        latest = following
    return latest


def upcoming(timing: Timing, after: datetime, count: int) -> list[datetime]:
    found: list[datetime] = []
    cursor = after
    while len(found) < count:
        following = next_after(timing, cursor)
        if following is None:
            break
        found.append(following)
        cursor = following
    return found


def shortest_gap(timing: Timing, after: datetime, samples: int = 50) -> timedelta | None:
    """The shortest time between consecutive due times over the next `samples` (plan limits)."""
    if timing.interval_seconds is not None:
        return timedelta(seconds=timing.interval_seconds)
    times = upcoming(timing, after, samples)
    gaps = [later - earlier for earlier, later in itertools.pairwise(times)]
    return min(gaps) if gaps else None


def jitter_offset(
    schedule_id: int, jitter_seconds: int, due: datetime, following: datetime | None
) -> timedelta:
    """How long after its due time an occurrence fires: a fixed fraction of the schedule's jitter
    (the same on every beat and every run, from its id), and never reaching the next occurrence."""
    if jitter_seconds <= 0:
        return timedelta(0)
    digest = hashlib.sha256(f"schedule-jitter:{schedule_id}".encode()).digest()
    fraction = int.from_bytes(digest[:8], "big") / 2**64  # in [0, 1)
    bound = timedelta(seconds=jitter_seconds)
    if following is not None:
        bound = min(bound, following - due)
    return fraction * bound
