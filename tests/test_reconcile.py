"""The reconciler: stranded jobs are published, due scheduled jobs are released."""

from __future__ import annotations

from datetime import timedelta

from django.utils import timezone

from jobs.maintenance import tenant_reconcile
from jobs.models import Job, JobStatus
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
