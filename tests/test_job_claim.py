"""Claiming a job for an attempt: one conditional UPDATE decides who runs it."""

from __future__ import annotations

import uuid

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from jobs.models import Job, JobAttempt
from jobs.services.transitions import job_claim
from tests.jobs_helpers import queued_job


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


def _statements(block) -> list[str]:
    with CaptureQueriesContext(connection) as captured:
        block()
    return [q["sql"] for q in captured.captured_queries]


def test_a_claim_after_a_tenant_switch_carries_the_search_path_in_its_own_round_trip(tenant_db):
    """A worker switches tenant for every task: django-tenants' SET search_path would be a round
    trip of its own before each claim. It travels in the claim's query string instead."""
    from saas_platform.lib.tenant_context import tenant_activate

    job = queued_job(tenant_db.acme, "demo.add", {"x": 1, "y": 2})
    tenant_activate(None)
    tenant_activate(tenant_db.acme.pk)
    try:
        sent = _statements(lambda: job_claim(job_id=str(job.id), task_id=str(job.task_id)))
        assert len(sent) == 1, sent
        assert sent[0].startswith('SET search_path = "acme","public"; '), sent[0][:80]
        # Its commit does not wait for the WAL flush (the attempt's end does), and it runs as
        # the session's prepared claim for acme (PREPARE the first time, EXECUTE always).
        assert "SET LOCAL synchronous_commit = off; " in sent[0]
        assert "EXECUTE saas_" in sent[0].split("SET LOCAL synchronous_commit = off; ")[1]
        assert Job.objects.get(id=job.id).status == "running"
        # django-tenants knows it is set: the next statement sends no SET of its own.
        later = _statements(lambda: Job.objects.filter(id=job.id).exists())
        assert len(later) == 1, later
        assert not later[0].startswith("SET"), later
    finally:
        tenant_activate(None)


def test_a_failed_statement_leaves_the_search_path_to_be_set_again(tenant_db):
    """The failed statement's implicit transaction undid its SET: the next cursor sends one."""
    from django.db import DataError
    from saas_platform.lib.db import rows_in_one_round_trip
    from saas_platform.lib.tenant_context import tenant_activate

    tenant_activate(None)
    tenant_activate(tenant_db.globex.pk)
    try:
        with pytest.raises(DataError):
            rows_in_one_round_trip("SELECT 1 / %(zero)s", {"zero": 0})
        later = _statements(lambda: Job.objects.exists())
        assert later[0].startswith('SET search_path = "globex"'), later
        assert rows_in_one_round_trip("SELECT current_schema()", {}) == [("globex",)]
    finally:
        tenant_activate(None)


def test_a_connection_replaced_by_its_health_check_gets_the_search_path_too(tenant_db):
    """Opening the cursor may replace a connection that failed its health check, and the new
    session has no search_path: django-tenants' close() forgets what it had set, so the SET is
    sent again (by django-tenants, as a statement of its own, on this rare path)."""
    from saas_platform.lib.db import rows_in_one_round_trip
    from saas_platform.lib.tenant_context import tenant_activate

    tenant_activate(None)
    tenant_activate(tenant_db.globex.pk)
    try:
        assert rows_in_one_round_trip("SELECT current_schema()", {}) == [("globex",)]
        connection.connection.close()  # broken behind Django's back
        connection.health_check_done = False  # as close_old_connections leaves it
        assert rows_in_one_round_trip("SELECT current_schema()", {}) == [("globex",)]
    finally:
        tenant_activate(None)
