"""Keeping accepted work moving: the reconciler's pass over one tenant (jobs.maintenance runs it).

Every way a job can be stranded, and the step that ends it:
1. waiting in the table (`queued` and not sent, or `scheduled`) while Redis forgot to tell the
   dispatcher (down at submit time, flushed, failed over): announce it again;
2. a concurrency slot counted in Redis for a job no longer in flight, or not counted for one
   that is: repair the count;
3. `running` on a worker that is dead (two looks a TTL apart: worker_liveness), or on a live worker
   that no longer holds its task (the attempt ended but its end was never recorded, say the
   database was unreachable then): requeue it under a new task id, so that the old message, if
   Redis ever gives it back, is stale and dropped. A job running on a live worker that holds it
   is never touched, however long it runs;
4. `queued`, sent a while ago, but its message is neither waiting in the broker (older
   than the one next in line: lib.broker) nor held by any live worker: the message was lost (a
   flush, a failover, a retry whose publish failed): publish it again. A duplicate is harmless,
   the claim lets one message run a job, so every doubt (a worker not yet confirmed dead, a
   report older than the publish) means "wait for the next pass", never "publish twice".
Prefetched and ETA messages of a dead worker are put back on their queues by the pass before
it visits tenants (jobs.maintenance), so their jobs simply run.

All read through indexes (jobs.models.Job.Meta); rows are taken oldest first, BATCH at a time.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from django.db.models import Q
from django.utils import timezone
from saas_platform.lib.broker import broker_step, oldest_waiting
from saas_platform.lib.db import connection
from saas_platform.lib.state_redis import state_redis
from saas_platform.lib.worker_liveness import (
    WorkerReport,
    deaths_confirm,
    registered_incarnations,
    worker_reports,
)

from jobs.catalogue import catalogue
from jobs.fairness import queues_known, tenant_mark_ready
from jobs.models import Job, JobStatus
from jobs.services.dispatch import inflight_key
from jobs.services.publishing import jobs_publish_now_rollback_unsafe
from jobs.services.transitions import job_requeue_rescued

logger = logging.getLogger(__name__)

# A message published this long ago and found nowhere is lost (the claim makes a false alarm a
# harmless duplicate; this keeps those rare).
LOST_GRACE = timedelta(seconds=30)
# A worker report must be this much younger than a job's start (or a message's publish) to
# speak for it: what the worker holds is read a moment before the report is written.
REPORT_MARGIN_SECONDS = 2.0
BATCH = 500


def incarnation_of(worker: str) -> str:
    """The incarnation part of Job.worker ("<incarnation>:<pid>")."""
    return worker.rsplit(":", 1)[0]


@dataclass
class WorkerView:
    """What one pass knows of the workers: live reports, confirmed deaths, and doubt."""

    reports: dict[str, WorkerReport] = field(default_factory=dict)
    dead: set[str] = field(default_factory=set)
    doubtful: set[str] = field(default_factory=set)  # no report, death not yet confirmed
    _looked_at: set[str] = field(default_factory=set)
    _queue_heads: dict[str, dict[int, float | None]] = field(default_factory=dict)

    @classmethod
    def look(cls) -> WorkerView:
        view = cls()
        view.learn(registered_incarnations())
        return view

    def learn(self, incarnations: set[str]) -> None:
        new = {name for name in incarnations if name} - self._looked_at
        if not new:
            return
        self._looked_at |= new
        reports = worker_reports(new)
        self.reports.update(reports)
        missing = new - reports.keys()
        dead = deaths_confirm(missing)
        self.dead |= dead
        self.doubtful |= missing - dead

    def holds(self, task_id: str) -> bool:
        return any(task_id in report.held for report in self.reports.values())

    def all_reported_since(self, epoch: float) -> bool:
        return all(report.at >= epoch + REPORT_MARGIN_SECONDS for report in self.reports.values())

    def queue_heads(self, queue: str) -> dict[int, float | None]:
        if queue not in self._queue_heads:
            self._queue_heads[queue] = oldest_waiting(queue)
        return self._queue_heads[queue]


@dataclass(frozen=True)
class ReconcileReport:
    announced: int = 0
    rescued: int = 0
    lost: int = 0
    slots_repaired: int = 0


# Per queue, one probe of an index each (job_waiting_idx's and job_scheduled_due_idx's prefix):
# the cost does not grow with a backlog, which is the dispatcher's to send.
_WAITING_NOW_SQL = """
SELECT EXISTS (
    SELECT 1 FROM jobs_job WHERE status = 'queued' AND published_at IS NULL AND queue = %(queue)s
)
"""
_NEXT_SCHEDULED_SQL = """
SELECT run_at FROM jobs_job
 WHERE status = 'scheduled' AND published_at IS NULL AND queue = %(queue)s
 ORDER BY run_at, id LIMIT 1
"""


def _queues() -> set[str]:
    """Every queue a job may wait for: the catalogue's, and any the dispatcher has been told of."""
    return {job_type.queue for job_type in catalogue().values()} | queues_known()


def jobs_announce_waiting(tenant_id: int) -> int:
    """Tell the dispatcher again about every queue where the tenant has jobs waiting.

    Submissions announce themselves; this covers an announcement lost with Redis (down at submit
    time, flushed, failed over). Announcing a tenant the dispatcher already knows is a no-op.
    """
    announced = 0
    with connection.cursor() as cursor:
        for queue in sorted(_queues()):
            cursor.execute(_WAITING_NOW_SQL, {"queue": queue})
            row = cursor.fetchone()
            if row and row[0]:
                tenant_mark_ready(tenant_id, queue)
                announced += 1
                continue
            cursor.execute(_NEXT_SCHEDULED_SQL, {"queue": queue})
            row = cursor.fetchone()
            if row:
                tenant_mark_ready(tenant_id, queue, due=row[0].timestamp())
                announced += 1
    return announced


def jobs_repair_slots(tenant_id: int) -> int:
    """Make the tenant's in-flight set (its concurrency slots) match the table: forget jobs no
    longer in flight (their end went unrecorded in Redis: a worker killed whole, a Redis blip),
    and count again jobs in flight that Redis lost (a flush, a failover). Returns the changes."""
    key = inflight_key(tenant_id)
    members: set[bytes] = state_redis().smembers(key)  # type: ignore[assignment]
    counted = {member.decode() for member in members}
    # Both halves read a partial index (job_running_idx, job_queued_published_idx), bounded by
    # what the tenant's cap lets be in flight.
    in_flight = Q(status=JobStatus.RUNNING) | Q(status=JobStatus.QUEUED, published_at__isnull=False)
    actual = {
        str(task_id) for task_id in Job.objects.filter(in_flight).values_list("task_id", flat=True)
    }
    stale = counted - actual
    missing = actual - counted
    pipe = state_redis().pipeline(transaction=False)
    if stale:
        pipe.srem(key, *stale)
    if missing:
        pipe.sadd(key, *missing)
    pipe.execute()
    return len(stale) + len(missing)


def jobs_rescue_from_dead_workers(view: WorkerView) -> int:
    """Requeue running jobs whose worker is dead or no longer holds them, oldest first.

    Every running job is looked at, BATCH at a time (keyset on started_at, id): more than a batch
    of live ones at the front must not hide dead workers' jobs behind them.
    """
    running: list[tuple[Any, Any, str, Any]] = []
    page = (
        Job.objects.filter(status=JobStatus.RUNNING).exclude(worker="").order_by("started_at", "id")
    )
    after: Q | None = None
    while True:
        rows = list(
            (page.filter(after) if after is not None else page).values_list(
                "id", "task_id", "worker", "started_at"
            )[:BATCH]
        )
        running += rows
        if len(rows) < BATCH:
            break
        last_id, _, _, last_started = rows[-1]
        after = Q(started_at__gt=last_started) | Q(started_at=last_started, id__gt=last_id)
    if not running:
        return 0
    view.learn({incarnation_of(worker) for _, _, worker, _ in running})
    rescued: list[Job] = []
    for job_id, task_id, worker, started_at in running:
        incarnation = incarnation_of(worker)
        report = view.reports.get(incarnation)
        if report is not None:
            started = started_at.timestamp() if started_at else 0.0
            if report.at < started + REPORT_MARGIN_SECONDS or str(task_id) in report.held:
                continue  # running on a live worker: never touched
            reason = f"its worker {incarnation} no longer runs it: the end was never recorded"
        elif incarnation in view.dead:
            reason = f"its worker {incarnation} died"
        else:
            continue  # no report yet, death not confirmed: the next pass decides
        if job_requeue_rescued(
            job_id=str(job_id), task_id=str(uuid.uuid4()), worker=worker, reason=reason
        ):
            rescued.append(Job.objects.get(id=job_id))
            # Its old task id no longer holds a concurrency slot.
            state_redis().srem(inflight_key(connection.tenant.pk), str(task_id))
    if rescued:
        logger.warning(
            "requeued %d jobs of dead workers in %s", len(rescued), connection.schema_name
        )
        # Back to waiting: the dispatcher sends them again, within the tenant's limits.
        for queue in {job.queue for job in rescued}:
            tenant_mark_ready(connection.tenant.pk, queue)
    return len(rescued)


def jobs_republish_lost(view: WorkerView) -> int:
    """Publish again the queued jobs whose message is nowhere: not waiting, not held."""
    if view.doubtful:
        return 0  # a worker that may be dead may hold them: its messages come back first
    cutoff = timezone.now() - LOST_GRACE
    candidates = list(
        Job.objects.filter(status=JobStatus.QUEUED, published_at__lt=cutoff)
        .filter(Q(run_at__isnull=True) | Q(run_at__lt=cutoff))
        .order_by("published_at")[:BATCH]
    )
    lost: list[Job] = []
    # Within a priority list consumption is FIFO: once one job is still waiting, every job of
    # that list published after it is too.
    waiting_from: set[tuple[str, int]] = set()
    for job in candidates:
        assert job.published_at is not None  # the filter above
        published = job.published_at.timestamp()
        heads = view.queue_heads(job.queue)
        step = broker_step(list(heads), 9 - job.priority)  # jobs.services.publishing's mapping
        if (job.queue, step) in waiting_from:
            continue
        head = heads[step]
        if head is not None and head <= published + 1.0:
            waiting_from.add((job.queue, step))
            continue
        if view.holds(str(job.task_id)) or not view.all_reported_since(published):
            continue
        lost.append(job)
    if lost:
        logger.warning(
            "republishing %d jobs whose messages were lost in %s",
            len(lost),
            connection.schema_name,
        )
        jobs_publish_now_rollback_unsafe(lost)
    return len(lost)


def tenant_has_unfinished_work() -> bool:
    # An IN on the status index; NOT IN (the final statuses) would scan the table.
    unfinished = [JobStatus.SCHEDULED, JobStatus.QUEUED, JobStatus.RUNNING]
    return Job.objects.filter(status__in=unfinished).exists()


def tenant_reconcile(view: WorkerView | None = None) -> ReconcileReport:
    """One pass for the active tenant."""
    view = view if view is not None else WorkerView.look()
    tenant_id = connection.tenant.pk
    rescued = jobs_rescue_from_dead_workers(view)
    return ReconcileReport(
        rescued=rescued,
        lost=jobs_republish_lost(view),
        slots_repaired=jobs_repair_slots(tenant_id),
        announced=jobs_announce_waiting(tenant_id),
    )
