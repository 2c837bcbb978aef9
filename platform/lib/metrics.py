"""Prometheus metrics the jobs layer records (prometheus-client, multiprocess mode).

Labels are bounded: job type, status and the tenant's plan, never the tenant itself (thousands
of tenants times types times buckets would swamp Prometheus). Every process writes its values to
files in PROMETHEUS_MULTIPROC_DIR (set before prometheus_client is imported: gunicorn's config
and saas_platform.observability.metrics see to it), and whichever process serves /metrics adds
up the files, so gunicorn workers and a Celery worker's pool children all count. Gauges that
describe shared state (queue depth) are read when scraped instead (the collector in
saas_platform.observability.metrics).
"""

from __future__ import annotations

from prometheus_client import Counter, Histogram

# Seconds: jobs run from milliseconds (demo.add) to the 30-minute time limit.
_RUN_BUCKETS = (0.005, 0.025, 0.1, 0.25, 1, 2.5, 10, 30, 60, 300, 900, 1800)
# Seconds from queued (or due) to started: a healthy platform starts jobs within a second.
_WAIT_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800, 3600)
# A beat on time submits within its tick (0.5 s) plus a transaction; minutes mean it was down or
# took over from another (a missed run caught up), up to the longest catch-up window (a day).
_BEAT_LAG_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300, 1800, 3600, 21600, 86400)

JOBS_ENDED = Counter(
    "jobs_ended",
    "Attempts ended, by outcome (succeeded, failed, retrying, timed_out, lost), type and plan.",
    ["status", "type", "plan"],
)
JOB_QUEUE_SECONDS = Histogram(
    "job_queue_seconds",
    "Time from queued (or due) to started, per attempt.",
    ["type"],
    buckets=_WAIT_BUCKETS,
)
JOB_RUN_SECONDS = Histogram(
    "job_run_seconds", "Run time of an attempt in its worker.", ["type"], buckets=_RUN_BUCKETS
)
RATE_LIMIT_DEFERRALS = Counter(
    "job_rate_limit_deferrals",
    "Dispatcher turns in which a job type was held back by its tenant's rate limit.",
    ["type"],
)
RECONCILER_RESCUES = Counter(
    "reconciler_rescues",
    "Jobs the reconciler put back: from dead workers, lost messages, forgotten announcements.",
    ["kind"],
)
# Recorded by the beat (jobs.schedules.beat) as it submits an occurrence.
BEAT_LAG_SECONDS = Histogram(
    "beat_lag_seconds",
    "How late the beat submitted a schedule's run: its job committed, minus its due time "
    "(plus the schedule's jitter).",
    buckets=_BEAT_LAG_BUCKETS,
)
