"""Reads behind the dashboard, in the active tenant's schema.

Every figure is bounded by the last 24 hours through the (created_at, id) index (job_newest_idx):
its cost follows the day's jobs, never the table's size, so a tenant with a million old jobs
pays for today's only; percentiles take the day's newest 2,000 started jobs. Three statements
for all the figures, kept 15 s in the cache per tenant, plus the short lists (LIMIT 10 on
indexes).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any, TypeVar

from django.core.cache import cache
from django.db import connection
from django.utils import timezone
from redis.exceptions import RedisError

from billing.metering import usage_by_day
from billing.usage import tenant_usage
from jobs.catalogue import catalogue
from jobs.models import Job, JobStatus
from jobs.selectors import WaitingReason, job_waiting_reason

T = TypeVar("T")
WINDOW = timedelta(hours=24)
LIST_LENGTH = 10
# Each waiting job's reason may cost a few Redis calls and a count: only the first few get one.
REASONS_SHOWN = 3
PERCENTILE_SAMPLE = 2000
# The figures are shared by every page view of a tenant for this long: a dashboard left open
# in many tabs costs one computation per tenant per interval, not one per view.
FIGURES_CACHE_SECONDS = 15


@dataclass(frozen=True)
class DayFigures:
    by_status: dict[str, int]
    total: int
    failure_rate: float | None  # failed / finished, None before anything finished
    p95_run_seconds: float | None
    p95_queue_seconds: float | None
    hours: list[datetime]
    hourly_succeeded: list[int]
    hourly_failed: list[int]
    hourly_other: list[int]


_COUNTS_SQL = """
    SELECT status, count(*) FROM jobs_job WHERE created_at >= %(since)s GROUP BY status
"""

# Percentiles need a sort of every value: over the window's newest PERCENTILE_SAMPLE started
# jobs (through the index, newest first) rather than all of a busy day's.
_PERCENTILES_SQL = """
    SELECT percentile_cont(0.95) WITHIN GROUP (
               ORDER BY extract(epoch FROM finished_at - started_at))
               FILTER (WHERE finished_at IS NOT NULL),
           percentile_cont(0.95) WITHIN GROUP (ORDER BY extract(epoch FROM started_at - queued_at))
      FROM (SELECT started_at, finished_at, queued_at FROM jobs_job
             WHERE created_at >= %(since)s AND started_at IS NOT NULL
             ORDER BY created_at DESC LIMIT %(sample)s) AS recent
"""

_HOURLY_SQL = """
    SELECT date_trunc('hour', created_at) AS hour,
           count(*) FILTER (WHERE status = 'succeeded'),
           count(*) FILTER (WHERE status = 'failed'),
           count(*) FILTER (WHERE status NOT IN ('succeeded', 'failed'))
      FROM jobs_job WHERE created_at >= %(since)s
     GROUP BY hour ORDER BY hour
"""


def _cached(key: str, compute: Callable[[], T]) -> T:
    try:
        value: T | None = cache.get(key)
    except RedisError:
        value = None
    if value is None:
        value = compute()
        with contextlib.suppress(RedisError):
            cache.set(key, value, FIGURES_CACHE_SECONDS)
    return value


def day_figures_cached(tenant_id: int) -> DayFigures:
    return _cached(f"portal:dashboard:{tenant_id}", day_figures)


def waiting_jobs_cached(tenant_id: int) -> list[WaitingJob]:
    # A reason costs a count of the jobs ahead in line (about 20 ms at 20 queued, more with a
    # long line): computed once per interval, not per view.
    return _cached(f"portal:waiting:{tenant_id}", waiting_jobs)


def day_figures(*, now: datetime | None = None) -> DayFigures:
    now = now or timezone.now()
    since = now - WINDOW
    with connection.cursor() as cursor:
        cursor.execute(_COUNTS_SQL, {"since": since})
        counts_by_status = dict(cursor.fetchall())
        cursor.execute(_PERCENTILES_SQL, {"since": since, "sample": PERCENTILE_SAMPLE})
        p95_run, p95_queue = cursor.fetchone() or (None, None)
        cursor.execute(_HOURLY_SQL, {"since": since})
        hourly = {row[0]: row[1:] for row in cursor.fetchall()}
    by_status = {status: counts_by_status.get(status, 0) for status in JobStatus.values}
    total = sum(by_status.values())
    finished = by_status[JobStatus.SUCCEEDED] + by_status[JobStatus.FAILED]
    first_hour = since.replace(minute=0, second=0, microsecond=0)
    hours = [first_hour + timedelta(hours=n) for n in range(25)]
    counts = [hourly.get(hour, (0, 0, 0)) for hour in hours]
    return DayFigures(
        by_status=by_status,
        total=total,
        failure_rate=by_status[JobStatus.FAILED] / finished if finished else None,
        p95_run_seconds=p95_run,
        p95_queue_seconds=p95_queue,
        hours=hours,
        hourly_succeeded=[c[0] for c in counts],
        hourly_failed=[c[1] for c in counts],
        hourly_other=[c[2] for c in counts],
    )


@dataclass(frozen=True)
class WaitingJob:
    job: Job
    reason: WaitingReason | None


def running_jobs() -> list[Job]:
    # job_running_idx: the running jobs, oldest first.
    return list(Job.objects.filter(status=JobStatus.RUNNING).order_by("started_at")[:LIST_LENGTH])


def waiting_jobs() -> list[WaitingJob]:
    jobs = list(
        Job.objects.filter(status__in=[JobStatus.QUEUED, JobStatus.SCHEDULED]).order_by(
            "-created_at", "-id"
        )[:LIST_LENGTH]
    )
    return [
        WaitingJob(job=job, reason=job_waiting_reason(job=job) if n < REASONS_SHOWN else None)
        for n, job in enumerate(jobs)
    ]


def recent_failures() -> list[Job]:
    # job_status_newest_idx.
    return list(Job.objects.filter(status=JobStatus.FAILED).order_by("-created_at")[:LIST_LENGTH])


@dataclass(frozen=True)
class LimitUse:
    name: str
    used: float
    limit: float
    unit: str

    @property
    def share(self) -> float:
        return self.used / self.limit if self.limit else 1.0

    @property
    def percent(self) -> int:
        return min(100, round(self.share * 100))


def usage_document(tenant_id: int) -> dict[str, Any]:
    return tenant_usage(tenant_id=tenant_id, job_types=sorted(catalogue()))


def nearest_limits(
    tenant_id: int, *, usage: dict[str, Any] | None = None, running: int | None = None
) -> list[LimitUse]:
    """The plan's limits this tenant is closest to, nearest first."""
    usage = usage or usage_document(tenant_id)
    limits = usage["limits"]
    if running is None:
        running = Job.objects.filter(status=JobStatus.RUNNING).count()
    uses = [
        LimitUse("Jobs this month", usage["usage"]["jobs"], limits["jobs_per_month"], "jobs"),
        LimitUse("Running at once", running, limits["concurrency"], "jobs"),
    ]
    return sorted(uses, key=lambda use: use.share, reverse=True)


@dataclass(frozen=True)
class UsageDayRow:
    day: date
    jobs: int
    total: int  # jobs so far this period, this day included


def usage_days(tenant_id: int, *, usage: dict[str, Any]) -> list[UsageDayRow]:
    """This period's jobs per UTC day up to today, with the running total the quota counts."""
    start = usage["period_start"].date()
    today = timezone.now().date()
    rows: list[UsageDayRow] = []
    total = 0
    for day, totals in usage_by_day(
        tenant_id=tenant_id, start=start, end=today + timedelta(days=1)
    ):
        total += totals.jobs
        rows.append(UsageDayRow(day=day, jobs=totals.jobs, total=total))
    return rows
