"""Why a job that has not started waits (GET /jobs/{id} `waiting_reason`, CONTRACT.md)."""

from __future__ import annotations

from datetime import timedelta

from django.utils import timezone

from jobs.models import Job
from jobs.selectors import job_waiting_reason
from jobs.services.transitions import job_claim
from tenants.models import Tenant
from tests.jobs_helpers import queued_job, run_attempt


def test_a_job_due_later_is_waiting_because_it_is_scheduled(tenant_db):
    later = timezone.now() + timedelta(hours=1)
    job = queued_job(tenant_db.acme, "demo.add", {"x": 1, "y": 2}, run_at=later, queued_at=later)
    with tenant_db.acme:
        reason = job_waiting_reason(job=job)
    assert reason is not None
    assert reason.code == "scheduled"
    assert later.isoformat() in reason.message


def test_a_retry_in_its_countdown_says_it_is_a_scheduled_retry(tenant_db):
    job = queued_job(tenant_db.acme, "demo.fail", {"message": "boom"}, max_attempts=3)
    run_attempt(tenant_db.acme, job)
    with tenant_db.acme:
        waiting = Job.objects.get(id=job.id)
        reason = job_waiting_reason(job=waiting, now=waiting.run_at - timedelta(seconds=0.1))
    assert waiting.status == "scheduled"  # a retry waits in the table until it is due
    assert reason is not None
    assert reason.code == "scheduled"
    assert "retry" in reason.message
    assert "attempt 2 of 3" in reason.message


def test_a_queued_job_waits_for_a_worker_and_a_running_one_waits_for_nothing(tenant_db):
    job = queued_job(tenant_db.acme, "demo.add", {"x": 1, "y": 2})
    with tenant_db.acme:
        reason = job_waiting_reason(job=job)
        assert reason is not None
        assert reason.code == "queued"
        job_claim(job_id=str(job.id), task_id=str(job.task_id))
        assert job_waiting_reason(job=Job.objects.get(id=job.id)) is None


def test_a_suspended_tenants_job_says_so(tenant_db):
    job = queued_job(tenant_db.acme, "demo.add", {"x": 1, "y": 2})
    # Suspended in memory only: the shared actor stays active for every other test.
    suspended = Tenant.objects.get(pk=tenant_db.acme.pk)
    suspended.is_active = False
    with suspended:
        reason = job_waiting_reason(job=Job.objects.get(id=job.id))
    assert reason is not None
    assert reason.code == "tenant_suspended"
