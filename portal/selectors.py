"""Reads behind the dashboard, in the active tenant's schema.

Every figure is bounded by the last 24 hours through the (created_at, id) index (job_newest_idx):
its cost follows the day's jobs, never the table's size, so a tenant with a million old jobs
pays for today's only. Three statements for all the figures, plus the short lists.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.db import connection
from django.utils import timezone

from billing.usage import tenant_usage
from jobs.catalogue import catalogue
from jobs.models import Job, JobStatus
from jobs.selectors import WaitingReason, job_waiting_reason

WINDOW = timedelta(hours=24)
LIST_LENGTH = 10
# Each waiting job's reason may cost a few Redis calls and a count: only the first few get one.
REASONS_SHOWN = 5


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


_FIGURES_SQL = """
    SELECT status, count(*),
           percentile_cont(0.95) WITHIN GROUP (
               ORDER BY extract(epoch FROM finished_at - started_at))
               FILTER (WHERE finished_at IS NOT NULL AND started_at IS NOT NULL),
           percentile_cont(0.95) WITHIN GROUP (
               ORDER BY extract(epoch FROM started_at - queued_at))
               FILTER (WHERE started_at IS NOT NULL)
      FROM jobs_job WHERE created_at >= %(since)s
     GROUP BY ROLLUP (status)
"""

_HOURLY_SQL = """
    SELECT date_trunc('hour', created_at) AS hour,
           count(*) FILTER (WHERE status = 'succeeded'),
           count(*) FILTER (WHERE status = 'failed'),
           count(*) FILTER (WHERE status NOT IN ('succeeded', 'failed'))
      FROM jobs_job WHERE created_at >= %(since)s
     GROUP BY hour ORDER BY hour
"""


def day_figures(*, now: datetime | None = None) -> DayFigures:
    now = now or timezone.now()
    since = now - WINDOW
    with connection.cursor() as cursor:
        cursor.execute(_FIGURES_SQL, {"since": since})
        rows = cursor.fetchall()
        cursor.execute(_HOURLY_SQL, {"since": since})
        hourly = {row[0]: row[1:] for row in cursor.fetchall()}
    by_status = {status: 0 for status in JobStatus.values}
    total, p95_run, p95_queue = 0, None, None
    for status, count, run, queue in rows:
        if status is None:  # the ROLLUP's grand total: percentiles over every status
            total, p95_run, p95_queue = count, run, queue
        else:
            by_status[status] = count
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
