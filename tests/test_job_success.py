"""A job's success is recorded by the results backend: Job row and result row in one statement,
with exactly the columns django-celery-results itself would write."""

from __future__ import annotations

import uuid

from celery.app.task import Context
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django_celery_results.backends.database import DatabaseBackend
from django_celery_results.models import TaskResult
from saas_platform.celery_app import app

from jobs.models import Job, JobAttempt
from jobs.services.transitions import job_claim
from tests.schemas import schemas_holding

COMPARED = [
    "status", "result", "content_type", "content_encoding", "meta", "traceback",
    "periodic_task_name", "task_name", "task_args", "task_kwargs", "worker",
]  # fmt: skip


def _running_job(tenant) -> Job:
    with tenant:
        job = Job(type="demo.add", args={"x": 1, "y": 2}, queue="default", submitted_by="test:ok")
        job.task_id = job.id
        job.save(force_insert=True)
        job_claim(job_id=str(job.id), task_id=str(job.task_id))
    return job


def _request(tenant, job: Job, task_id: str) -> Context:
    return Context(
        id=task_id, task="demo.add", args=[str(job.id)], kwargs={}, argsrepr=repr([str(job.id)]),
        kwargsrepr="{}", hostname="w1@host", tenant_id=tenant.pk, tenant_schema=tenant.schema_name,
        periodic_task_name=None,
    )  # fmt: skip


def test_success_marks_the_job_and_writes_the_result_in_its_tenant(tenant_db):
    job = _running_job(tenant_db.acme)
    task_id = str(job.task_id)
    app.backend.store_result(
        task_id, {"sum": 3}, "SUCCESS", request=_request(tenant_db.acme, job, task_id)
    )
    with tenant_db.acme:
        job.refresh_from_db()
        row = TaskResult.objects.get(task_id=task_id)
    assert (job.status, job.result, job.error) == ("succeeded", {"sum": 3}, "")
    assert job.finished_at is not None
    assert row.status == "SUCCESS"
    assert schemas_holding("django_celery_results_taskresult", "task_id", [task_id])[task_id] == {
        "acme"
    }


def test_the_result_row_matches_what_django_celery_results_writes(tenant_db):
    ours = _running_job(tenant_db.acme)
    theirs = _running_job(tenant_db.acme)
    plain = DatabaseBackend(app=app)
    with tenant_db.acme:
        app.backend.store_result(
            str(ours.task_id),
            [1, "two", None],
            "SUCCESS",
            request=_request(tenant_db.acme, ours, str(ours.task_id)),
        )
        plain.store_result(
            str(theirs.task_id),
            [1, "two", None],
            "SUCCESS",
            request=_request(tenant_db.acme, theirs, str(theirs.task_id)),
        )
        mine = TaskResult.objects.values(*COMPARED).get(task_id=str(ours.task_id))
        reference = TaskResult.objects.values(*COMPARED).get(task_id=str(theirs.task_id))
    # task_args carries each job's own id; with that masked, the rows are identical.
    mine["task_args"] = mine["task_args"].replace(str(ours.id), "<job>")
    reference["task_args"] = reference["task_args"].replace(str(theirs.id), "<job>")
    assert mine == reference


def test_a_stale_attempts_success_does_not_touch_the_job(tenant_db):
    job = _running_job(tenant_db.acme)
    stale = str(uuid.uuid4())
    app.backend.store_result(stale, 5, "SUCCESS", request=_request(tenant_db.acme, job, stale))
    with tenant_db.acme:
        job.refresh_from_db()
    assert job.status == "running"


def test_success_ends_the_attempt_succeeded_in_the_same_single_statement(tenant_db):
    job = _running_job(tenant_db.acme)
    task_id = str(job.task_id)
    request = _request(tenant_db.acme, job, task_id)
    with tenant_db.acme:
        job.refresh_from_db()  # the search_path is set now, as in a worker running the job
        with CaptureQueriesContext(connection) as captured:
            app.backend.store_result(task_id, {"sum": 3}, "SUCCESS", request=request)
    # One statement for the Job row, its attempt and its result row.
    assert len(captured.captured_queries) == 1, captured.captured_queries
    with tenant_db.acme:
        job.refresh_from_db()
        [attempt] = JobAttempt.objects.filter(job=job)
    assert (attempt.number, attempt.outcome) == (1, "succeeded")
    assert attempt.finished_at == job.finished_at
    assert attempt.duration_seconds is not None
    assert attempt.duration_seconds >= 0


def test_a_stale_attempts_success_leaves_the_running_attempt_running(tenant_db):
    job = _running_job(tenant_db.acme)
    stale = str(uuid.uuid4())
    app.backend.store_result(stale, 5, "SUCCESS", request=_request(tenant_db.acme, job, stale))
    with tenant_db.acme:
        [attempt] = JobAttempt.objects.filter(job=job)
    assert (attempt.outcome, attempt.finished_at) == ("running", None)


def test_a_late_success_of_an_attempt_taken_over_changes_nothing(tenant_db):
    # The attempt's worker was declared dead and a redelivered copy claimed the job: the old
    # attempt's success arriving afterwards must neither finish the job nor write a result row.
    job = _running_job(tenant_db.acme)
    task_id = str(job.task_id)
    with tenant_db.acme:
        Job.objects.filter(id=job.id).update(worker="other-incarnation:4242")
    app.backend.store_result(
        task_id, {"sum": 3}, "SUCCESS", request=_request(tenant_db.acme, job, task_id)
    )
    with tenant_db.acme:
        job.refresh_from_db()
        assert not TaskResult.objects.filter(task_id=task_id).exists()
    assert (job.status, job.result, job.worker) == ("running", None, "other-incarnation:4242")
    _end(tenant_db.acme, job)


def _end(tenant, job: Job) -> None:
    # Left running under a worker nobody runs, a later worker's reconciler would rescue and run it.
    with tenant:
        Job.objects.filter(id=job.id).update(status="cancelled")
