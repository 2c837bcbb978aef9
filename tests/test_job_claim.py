"""Claiming a job for an attempt: one conditional UPDATE decides who runs it."""

from __future__ import annotations

import uuid

from django.db import connection
from django.test.utils import CaptureQueriesContext

from jobs.models import Job, JobAttempt
from jobs.services.transitions import job_claim


def _queued(tenant) -> Job:
    job = Job(type="demo.add", args={"x": 1, "y": 2}, queue="default", submitted_by="test:claim")
    job.task_id = job.id
    job.save(force_insert=True)
    return job


def test_a_queued_job_is_claimed_once(tenant_db):
    with tenant_db.acme:
        job = _queued(tenant_db.acme)
        claimed = job_claim(job_id=str(job.id), task_id=str(job.task_id))
        assert claimed is not None
        assert (claimed.type, claimed.args, claimed.attempts) == ("demo.add", {"x": 1, "y": 2}, 1)
        job.refresh_from_db()
        assert (job.status, job.ran_in_schema) == ("running", "acme")


def test_a_duplicate_message_of_a_running_job_is_refused(tenant_db):
    with tenant_db.acme:
        job = _queued(tenant_db.acme)
        job_claim(job_id=str(job.id), task_id=str(job.task_id))
        assert job_claim(job_id=str(job.id), task_id=str(job.task_id)) is None
        assert Job.objects.get(id=job.id).attempts == 1


def test_a_redelivery_after_a_lost_worker_claims_the_running_job_again(tenant_db):
    with tenant_db.acme:
        job = _queued(tenant_db.acme)
        job_claim(job_id=str(job.id), task_id=str(job.task_id))
        again = job_claim(job_id=str(job.id), task_id=str(job.task_id), redelivered=True)
        assert again is not None
        assert again.attempts == 2


def test_a_stale_task_id_or_a_final_job_is_refused(tenant_db):
    with tenant_db.acme:
        job = _queued(tenant_db.acme)
        assert job_claim(job_id=str(job.id), task_id=str(uuid.uuid4())) is None
        Job.objects.filter(id=job.id).update(status="cancelled")
        assert job_claim(job_id=str(job.id), task_id=str(job.task_id), redelivered=True) is None


def test_another_tenants_job_cannot_be_claimed(tenant_db):
    with tenant_db.acme:
        job = _queued(tenant_db.acme)
    with tenant_db.globex:
        assert job_claim(job_id=str(job.id), task_id=str(job.task_id)) is None
    with tenant_db.acme:
        assert Job.objects.get(id=job.id).status == "queued"


def test_the_claim_and_its_attempt_row_are_one_statement(tenant_db):
    with tenant_db.acme:
        job = _queued(tenant_db.acme)
        with CaptureQueriesContext(connection) as captured:
            claimed = job_claim(job_id=str(job.id), task_id=str(job.task_id))
        assert claimed is not None
        assert len(captured.captured_queries) == 1, captured.captured_queries
        assert JobAttempt.objects.filter(job=job, outcome="running").count() == 1


def test_a_redelivered_claim_is_still_one_statement(tenant_db):
    with tenant_db.acme:
        job = _queued(tenant_db.acme)
        job_claim(job_id=str(job.id), task_id=str(job.task_id))
        with CaptureQueriesContext(connection) as captured:
            job_claim(job_id=str(job.id), task_id=str(job.task_id), redelivered=True)
        assert len(captured.captured_queries) == 1, captured.captured_queries
        outcomes = list(JobAttempt.objects.filter(job=job).values_list("number", "outcome"))
    assert outcomes == [(1, "lost"), (2, "running")]
