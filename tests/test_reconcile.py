"""The reconciler: stranded jobs are published, due scheduled jobs are released."""

from __future__ import annotations

import time
from datetime import timedelta

from django.utils import timezone

from jobs.models import Job, JobStatus
from jobs.services.reconciliation import tenant_reconcile
from tests.jobs_helpers import submit


def test_a_scheduled_job_is_released_when_it_comes_due(tenant_db):
    job = submit(tenant_db.initech, "demo.add", {"x": 1, "y": 1}, delay_seconds=7200)
    assert job.status == JobStatus.SCHEDULED
    with tenant_db.initech:
        tenant_reconcile()
        assert Job.objects.get(id=job.id).status == JobStatus.SCHEDULED  # not due yet
        Job.objects.filter(id=job.id).update(run_at=timezone.now() + timedelta(minutes=5))
        report = tenant_reconcile()
        released = Job.objects.get(id=job.id)
    assert report.released >= 1
    assert released.status == JobStatus.QUEUED
    assert released.published_at is not None


def test_a_committed_but_unpublished_job_is_published(tenant_db):
    job = submit(tenant_db.initech, "demo.add", {"x": 1, "y": 1}, delay_seconds=600)
    with tenant_db.initech:
        # As if the broker had been down at submit time, a while ago.
        Job.objects.filter(id=job.id).update(
            published_at=None, created_at=timezone.now() - timedelta(minutes=1)
        )
        report = tenant_reconcile()
        assert report.republished >= 1
        assert Job.objects.get(id=job.id).published_at is not None


def test_a_fresh_unpublished_job_is_left_to_its_own_publisher(tenant_db):
    job = submit(tenant_db.initech, "demo.add", {"x": 1, "y": 1}, delay_seconds=600)
    with tenant_db.initech:
        Job.objects.filter(id=job.id).update(published_at=None)
        tenant_reconcile()
        assert Job.objects.get(id=job.id).published_at is None


def test_a_job_running_past_its_time_limit_on_a_live_worker_is_requeued(tenant_db):
    from saas_platform.lib.worker_liveness import WorkerReport, report_publish

    from jobs.services.transitions import job_claim

    node = "alive-test-node@host"
    report_publish(WorkerReport(node, "n", 1, (), frozenset(), time.time()))
    job = submit(tenant_db.initech, "demo.add", {"x": 1, "y": 1}, delay_seconds=600)
    with tenant_db.initech:
        job_claim(job_id=str(job.id), task_id=str(job.task_id), worker=node)
        # demo.add's hard limit is 120 s: an hour in, that attempt cannot still be running.
        Job.objects.filter(id=job.id).update(started_at=timezone.now() - timedelta(hours=1))
        report = tenant_reconcile()
        rescued = Job.objects.get(id=job.id)
    assert report.rescued >= 1
    assert rescued.status == JobStatus.QUEUED
    assert rescued.task_id != job.task_id


def test_a_job_running_within_its_time_limit_on_a_live_worker_is_left_alone(tenant_db):
    from saas_platform.lib.worker_liveness import WorkerReport, report_publish

    from jobs.services.transitions import job_claim

    node = "alive-test-node-2@host"
    report_publish(WorkerReport(node, "n", 1, (), frozenset(), time.time()))
    job = submit(tenant_db.initech, "demo.add", {"x": 1, "y": 1}, delay_seconds=600)
    with tenant_db.initech:
        job_claim(job_id=str(job.id), task_id=str(job.task_id), worker=node)
        Job.objects.filter(id=job.id).update(started_at=timezone.now() - timedelta(seconds=60))
        tenant_reconcile()
        assert Job.objects.get(id=job.id).status == JobStatus.RUNNING


def test_a_rescued_jobs_attempt_is_marked_lost_and_its_next_attempt_says_rescued(tenant_db):
    from jobs.selectors import job_attempts
    from jobs.services.transitions import job_claim

    job = submit(tenant_db.initech, "demo.add", {"x": 1, "y": 1}, delay_seconds=600)
    with tenant_db.initech:
        # A worker that never reported: dead as far as the reconciler can tell.
        job_claim(job_id=str(job.id), task_id=str(job.task_id), worker="gone-test-node@host#0")
        Job.objects.filter(id=job.id).update(started_at=timezone.now() - timedelta(hours=1))
        tenant_reconcile()
        rescued = Job.objects.get(id=job.id)
        job_claim(job_id=str(job.id), task_id=str(rescued.task_id))
        lost, again = job_attempts(job_id=job.id)
    assert (rescued.status, rescued.attempt_cause) == (JobStatus.QUEUED, "rescued")
    assert (lost.outcome, lost.task_id) == ("lost", job.task_id)
    assert "reconciler" in lost.error
    assert (again.number, again.cause, again.task_id) == (2, "rescued", rescued.task_id)
