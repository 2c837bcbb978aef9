"""The reconciler's pass over one tenant (jobs.services.reconciliation), step by step.

Worker reports and the broker are real (the run's Redis); worker processes are not needed here:
tests/test_worker_death.py and friends cover the same paths with real workers.
"""

from __future__ import annotations

import time
import uuid
from datetime import timedelta

import pytest
from django.utils import timezone
from saas_platform.lib.state_redis import state_key, state_redis
from saas_platform.lib.worker_liveness import WorkerReport, heartbeat_ttl, report_publish

import jobs.services.reconciliation as reconciliation
from jobs.models import Job, JobStatus
from jobs.selectors import job_attempts
from jobs.services.reconciliation import WorkerView, tenant_reconcile
from jobs.services.transitions import job_claim
from tests.jobs_helpers import submit


def _fair(queue: str, part: str) -> str:
    return state_key("fair", queue, part)


def _forget_announcements(tenant) -> None:
    """As if Redis had lost them (down at submit time, flushed, failed over)."""
    for part in ("ready", "later"):
        state_redis().zrem(_fair("default", part), tenant.pk)


def test_a_waiting_job_whose_announcement_was_lost_is_announced_again(tenant_db):
    submit(tenant_db.initech, "demo.add", {"x": 1, "y": 1})
    _forget_announcements(tenant_db.initech)
    with tenant_db.initech:
        report = tenant_reconcile(WorkerView())
    assert report.announced >= 1
    assert state_redis().zscore(_fair("default", "ready"), tenant_db.initech.pk) is not None


def test_a_scheduled_jobs_tenant_is_announced_for_its_run_at(tenant_db):
    with tenant_db.initech:
        Job.objects.filter(status__in=[JobStatus.QUEUED, JobStatus.SCHEDULED]).update(
            status=JobStatus.CANCELLED
        )
    job = submit(tenant_db.initech, "demo.add", {"x": 1, "y": 1}, delay_seconds=7200)
    assert job.status == JobStatus.SCHEDULED
    _forget_announcements(tenant_db.initech)
    with tenant_db.initech:
        tenant_reconcile(WorkerView())
    due = state_redis().zscore(_fair("default", "later"), tenant_db.initech.pk)
    assert due == pytest.approx(job.run_at.timestamp(), abs=1)
    assert state_redis().zscore(_fair("default", "ready"), tenant_db.initech.pk) is None


def _incarnation() -> str:
    return f"reconcile-test@host#{uuid.uuid4().hex[:8]}"


def _report(incarnation: str, held: set[str], at: float | None = None) -> WorkerReport:
    return WorkerReport(incarnation, "node", 1, ("default",), frozenset(held), at or time.time())


_made: list[Job] = []


def _running(tenant, incarnation: str, *, started_ago: timedelta) -> Job:
    job = submit(tenant, "demo.add", {"x": 1, "y": 1})
    with tenant:
        job_claim(job_id=str(job.id), task_id=str(job.task_id), worker=incarnation)
        Job.objects.filter(id=job.id).update(started_at=timezone.now() - started_ago)
        _made.append(job)
        return Job.objects.get(id=job.id)


@pytest.fixture(autouse=True)
def _finish_what_the_test_left_running(tenant_db):
    # What a test leaves unfinished (running on a made-up worker, queued with its message gone)
    # would otherwise be found by the next test's pass.
    yield
    with tenant_db.initech:
        Job.objects.filter(id__in=[job.id for job in _made]).update(status=JobStatus.FAILED)
    _made.clear()


# --- running jobs ------------------------------------------------------------------------------


def test_a_job_held_by_a_live_worker_is_left_alone_however_long_it_runs(tenant_db):
    # demo.add's hard limit is 120 s; an hour in, it is still the worker's business.
    incarnation = _incarnation()
    job = _running(tenant_db.initech, incarnation, started_ago=timedelta(hours=1))
    report_publish(_report(incarnation, {str(job.task_id)}))
    with tenant_db.initech:
        report = tenant_reconcile(WorkerView.look())
        assert Job.objects.get(id=job.id).status == JobStatus.RUNNING
    assert report.rescued == 0


def test_a_job_its_live_worker_no_longer_holds_is_requeued_under_a_new_task_id(tenant_db):
    # The attempt ended but its end was never written (the database was down then).
    incarnation = _incarnation()
    job = _running(tenant_db.initech, incarnation, started_ago=timedelta(seconds=30))
    report_publish(_report(incarnation, set()))
    with tenant_db.initech:
        report = tenant_reconcile(WorkerView.look())
        rescued = Job.objects.get(id=job.id)
    assert report.rescued == 1
    assert (rescued.status, rescued.worker) == (JobStatus.QUEUED, "")
    assert rescued.task_id != job.task_id
    # Back to waiting: the dispatcher sends it again, within the tenant's limits.
    assert rescued.published_at is None
    assert state_redis().zscore(_fair("default", "ready"), tenant_db.initech.pk) is not None
    with tenant_db.initech:
        [lost] = job_attempts(job_id=job.id)
    assert (lost.outcome, lost.task_id) == ("lost", job.task_id)
    assert "never recorded" in lost.error


def test_a_report_older_than_the_jobs_start_does_not_speak_for_it(tenant_db):
    incarnation = _incarnation()
    job = _running(tenant_db.initech, incarnation, started_ago=timedelta(seconds=1))
    report_publish(_report(incarnation, set(), at=time.time() - 30))
    with tenant_db.initech:
        tenant_reconcile(WorkerView.look())
        assert Job.objects.get(id=job.id).status == JobStatus.RUNNING


def _mark_missing_since(incarnation: str, seconds_ago: float) -> None:
    state_redis().set(state_key("worker-missing", incarnation), str(time.time() - seconds_ago))


def test_a_worker_missing_once_is_not_dead_yet(tenant_db):
    incarnation = _incarnation()  # never reported: missing from the first look
    job = _running(tenant_db.initech, incarnation, started_ago=timedelta(minutes=5))
    with tenant_db.initech:
        tenant_reconcile(WorkerView.look())
        assert Job.objects.get(id=job.id).status == JobStatus.RUNNING
    # The first look was recorded, to be confirmed a TTL later.
    assert state_redis().get(state_key("worker-missing", incarnation)) is not None


def test_a_worker_missing_on_two_looks_a_ttl_apart_is_dead_and_its_job_requeued(tenant_db):
    incarnation = _incarnation()
    job = _running(tenant_db.initech, incarnation, started_ago=timedelta(minutes=5))
    _mark_missing_since(incarnation, heartbeat_ttl() + 1)
    with tenant_db.initech:
        report = tenant_reconcile(WorkerView.look())
        rescued = Job.objects.get(id=job.id)
    assert report.rescued == 1
    assert (rescued.status, rescued.attempt_cause) == (JobStatus.QUEUED, "rescued")
    with tenant_db.initech:
        job_claim(job_id=str(job.id), task_id=str(rescued.task_id))
        lost, again = job_attempts(job_id=job.id)
    assert (lost.outcome, lost.task_id) == ("lost", job.task_id)
    assert "died" in lost.error
    assert (again.number, again.cause, again.task_id) == (2, "rescued", rescued.task_id)


def test_a_worker_that_reports_again_is_no_longer_suspected(tenant_db):
    incarnation = _incarnation()
    job = _running(tenant_db.initech, incarnation, started_ago=timedelta(minutes=5))
    _mark_missing_since(incarnation, heartbeat_ttl() + 1)
    report_publish(_report(incarnation, {str(job.task_id)}))  # back after a Redis blip
    assert state_redis().get(state_key("worker-missing", incarnation)) is None
    with tenant_db.initech:
        tenant_reconcile(WorkerView.look())
        assert Job.objects.get(id=job.id).status == JobStatus.RUNNING


# --- queued jobs whose message was lost --------------------------------------------------------


@pytest.fixture
def no_lost_grace(monkeypatch):
    monkeypatch.setattr(reconciliation, "LOST_GRACE", timedelta(0))


def _published_to_own_queue(tenant, queue: str) -> Job:
    """A job published for real, to a queue no worker here consumes."""
    from jobs.services.publishing import jobs_publish_now_rollback_unsafe

    job = submit(tenant, "demo.add", {"x": 1, "y": 1})
    with tenant:
        Job.objects.filter(id=job.id).update(queue=queue)
        job = Job.objects.get(id=job.id)
        jobs_publish_now_rollback_unsafe([job])
        _made.append(job)
        return Job.objects.get(id=job.id)


def _flush_queue(queue: str) -> None:
    import redis
    from django.conf import settings

    broker = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    for key in broker.scan_iter(match=f"{settings.REDIS_KEY_PREFIX}{queue}*"):
        broker.delete(key)


def test_a_job_whose_message_still_waits_in_the_broker_is_left_alone(tenant_db, no_lost_grace):
    queue = f"lost-{uuid.uuid4().hex[:6]}"
    job = _published_to_own_queue(tenant_db.initech, queue)
    time.sleep(0.01)
    with tenant_db.initech:
        report = tenant_reconcile(WorkerView())
        assert Job.objects.get(id=job.id).published_at == job.published_at
    assert report.lost == 0
    _flush_queue(queue)


def test_a_job_whose_message_is_gone_is_published_again(tenant_db, no_lost_grace):
    queue = f"lost-{uuid.uuid4().hex[:6]}"
    job = _published_to_own_queue(tenant_db.initech, queue)
    _flush_queue(queue)  # as a FLUSHDB or a failover would
    time.sleep(0.01)
    with tenant_db.initech:
        report = tenant_reconcile(WorkerView())
        again = Job.objects.get(id=job.id)
    assert report.lost == 1
    assert again.published_at > job.published_at
    assert again.task_id == job.task_id  # the same attempt: whichever copy comes first runs it
    _flush_queue(queue)


def test_a_job_held_by_a_live_worker_is_not_lost(tenant_db, no_lost_grace):
    queue = f"lost-{uuid.uuid4().hex[:6]}"
    job = _published_to_own_queue(tenant_db.initech, queue)
    _flush_queue(queue)  # consumed: the worker holds it (prefetched, or waiting for its ETA)
    view = WorkerView(reports={"w": _report("w", {str(job.task_id)}, at=time.time() + 5)})
    with tenant_db.initech:
        assert tenant_reconcile(view).lost == 0


def test_nothing_is_called_lost_while_a_worker_may_still_be_dead(tenant_db, no_lost_grace):
    queue = f"lost-{uuid.uuid4().hex[:6]}"
    job = _published_to_own_queue(tenant_db.initech, queue)
    _flush_queue(queue)
    view = WorkerView(doubtful={"maybe-dead#1"})
    with tenant_db.initech:
        assert tenant_reconcile(view).lost == 0
        assert Job.objects.get(id=job.id).published_at == job.published_at


def test_a_report_taken_before_the_publish_cannot_vouch_that_nothing_holds_it(
    tenant_db, no_lost_grace
):
    queue = f"lost-{uuid.uuid4().hex[:6]}"
    _published_to_own_queue(tenant_db.initech, queue)
    _flush_queue(queue)
    view = WorkerView(reports={"w": _report("w", set(), at=time.time() - 60)})
    with tenant_db.initech:
        assert tenant_reconcile(view).lost == 0
