"""A workflow step's success: the job's success, its result row and the next step's job in one
statement, the workflow's row locked first (jobs.services.workflows.workflow_step_succeed).
Real PostgreSQL, no worker: the chains on real workers are tests/test_workflows_worker.py."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from django_celery_results.models import TaskResult

from jobs.models import Job, JobStatus, Workflow
from jobs.services.transitions import JobSuccess, NextStep, job_claim
from jobs.services.workflows import (
    StepInFlight,
    StepRequest,
    workflow_step_succeed,
    workflow_submit,
)
from tests.workers import wait_for

SUBMITTER = "test:steps"
STEPS = [
    StepRequest(type="demo.add", args={"x": 1, "y": 2}),
    StepRequest(type="demo.add", args={"y": 3}),
]


@pytest.fixture(autouse=True)
def _workflows_removed(tenant_db: Any) -> Iterator[None]:
    """The shared tenant keeps no job of these tests for a later test's dispatcher to find."""
    yield
    with tenant_db.acme:
        mine = Workflow.objects.filter(submitted_by=SUBMITTER)
        Job.objects.filter(workflow__in=mine).delete()
        mine.delete()


def _running_first_step(tenant: Any) -> tuple[Workflow, Job, StepInFlight]:
    """A two-step workflow whose first step's job this process has claimed."""
    with tenant:
        workflow = workflow_submit(steps=STEPS, submitted_by=SUBMITTER)
        job = Job.objects.get(workflow=workflow, position=1)
        claimed = job_claim(job_id=str(job.id), task_id=str(job.task_id))
    assert claimed is not None
    assert claimed.position == 1
    return workflow, job, StepInFlight(str(workflow.id), 1, claimed.next_step)


def _success(job: Job, result: Any) -> JobSuccess:
    return JobSuccess(
        job_id=str(job.id),
        task_id=str(job.task_id),
        encoded_result=str(result) if isinstance(result, int) else f'"{result}"',
        result_row={
            "content_type": "application/json",
            "content_encoding": "utf-8",
            "meta": "{}",
            "periodic_task_name": None,
            "task_name": job.type,
            "task_args": None,
            "task_kwargs": None,
            "worker": "test@host",
        },
    )


def test_the_claim_of_a_step_reads_the_step_after_it_and_the_last_reads_none(tenant_db):
    workflow, _, step = _running_first_step(tenant_db.acme)
    assert step.next_step is not None
    assert (step.next_step.type, step.next_step.args) == ("demo.add", {"y": 3})
    assert step.next_step.submitted_by == SUBMITTER
    with tenant_db.acme:
        workflow.jobs.update(status=JobStatus.SUCCEEDED)
        last = Job.objects.create(
            type="demo.add", args={"y": 3, "input": 3}, queue="default", submitted_by="test",
            workflow=workflow, position=2,
        )  # fmt: skip
        Job.objects.filter(id=last.id).update(task_id=last.id)
        claimed = job_claim(job_id=str(last.id), task_id=str(last.id))
    assert claimed is not None
    assert claimed.position == 2
    assert claimed.next_step is None


def test_a_steps_success_result_row_and_next_job_are_one_statement(tenant_db):
    workflow, job, step = _running_first_step(tenant_db.acme)
    with tenant_db.acme, CaptureQueriesContext(connection) as captured:
        took = workflow_step_succeed(step=step, success=_success(job, 3), result=3)
    assert took
    # One query string (a PREPARE ahead of its first EXECUTE rides in it): no BEGIN, no lock
    # query, no INSERT and no COMMIT of their own.
    assert len(captured) == 1, [q["sql"][:80] for q in captured]
    with tenant_db.acme:
        assert Job.objects.get(id=job.id).status == JobStatus.SUCCEEDED
        assert TaskResult.objects.filter(task_id=str(job.task_id), status="SUCCESS").exists()
        following = Job.objects.get(workflow=workflow, position=2)
    assert (following.status, following.args) == (JobStatus.QUEUED, {"y": 3, "input": 3})
    assert following.task_id == following.id
    assert following.submitted_by == SUBMITTER
    assert following.published_at is None  # the dispatcher sends it, as any waiting job


class _Cancel(threading.Thread):
    """What workflow_cancel does first, in a transaction of its own thread: the workflow's row
    locked and marked cancelled. `then` runs inside that transaction before its commit."""

    def __init__(self, tenant: Any, workflow: Workflow, then: Callable[[], None]) -> None:
        super().__init__()
        self.tenant, self.workflow, self.then = tenant, workflow, then
        self.locked = threading.Event()
        self.failures: list[BaseException] = []

    def run(self) -> None:
        try:
            with self.tenant, transaction.atomic():
                Workflow.objects.select_for_update().filter(id=self.workflow.id).update(
                    cancelled_at=timezone.now()
                )
                self.locked.set()
                self.then()
        except BaseException as exc:  # reported in the test's thread
            self.failures.append(exc)
        finally:
            connection.close()


def test_a_cancel_committed_while_the_success_waits_makes_no_next_step(tenant_db):
    """The cancel of a workflow whose running step cannot be stopped holds the workflow's row;
    the step's success waits for it, then records the success and makes no next step."""
    workflow, job, step = _running_first_step(tenant_db.acme)
    release = threading.Event()
    canceller = _Cancel(tenant_db.acme, workflow, then=lambda: release.wait(10) and None)
    canceller.start()
    assert canceller.locked.wait(10)
    threading.Timer(0.5, release.set).start()
    started = time.monotonic()
    with tenant_db.acme:
        took = workflow_step_succeed(step=step, success=_success(job, 3), result=3)
    waited = time.monotonic() - started
    canceller.join(10)
    assert canceller.failures == []
    assert took
    assert waited >= 0.4  # it waited for the cancel's commit
    with tenant_db.acme:
        assert Job.objects.get(id=job.id).status == JobStatus.SUCCEEDED
        assert not Job.objects.filter(workflow=workflow, position=2).exists()


def _waiting_for_a_lock(pid: int) -> bool:
    with connection.cursor() as cursor:
        cursor.execute("SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s", [pid])
        row = cursor.fetchone()
    return row is not None and row[0] == "Lock"


def test_a_cancel_that_also_ends_the_running_step_meets_the_success_without_a_deadlock(tenant_db):
    """The lock order of workflow_cancel: the workflow's row, then the job's. The cancel ends the
    step's job while the success waits on the workflow's row: the success, which has not touched
    the job's row yet, then finds the job cancelled. Had it locked the job's row first, the two
    would deadlock (PostgreSQL aborts one of them)."""
    workflow, job, step = _running_first_step(tenant_db.acme)
    with tenant_db.acme:
        connection.ensure_connection()
        success_pid = connection.connection.info.backend_pid

    def end_the_step() -> None:
        wait_for(
            lambda: _waiting_for_a_lock(success_pid),
            timeout=10,
            what="the success to wait for the workflow's row",
        )
        Job.objects.filter(id=job.id).update(status=JobStatus.CANCELLED, finished_at=timezone.now())

    canceller = _Cancel(tenant_db.acme, workflow, then=end_the_step)
    canceller.start()
    assert canceller.locked.wait(10)
    with tenant_db.acme:
        took = workflow_step_succeed(step=step, success=_success(job, 3), result=3)
    canceller.join(20)
    assert canceller.failures == []
    assert not took
    with tenant_db.acme:
        assert Job.objects.get(id=job.id).status == JobStatus.CANCELLED
        assert not Job.objects.filter(workflow=workflow, position=2).exists()
        assert not TaskResult.objects.filter(task_id=str(job.task_id)).exists()


def test_a_success_the_job_did_not_take_makes_no_next_step(tenant_db):
    workflow, job, step = _running_first_step(tenant_db.acme)
    with tenant_db.acme:
        Job.objects.filter(id=job.id).update(status=JobStatus.CANCELLED)
        assert not workflow_step_succeed(step=step, success=_success(job, 3), result=3)
        assert not Job.objects.filter(workflow=workflow, position=2).exists()
        assert not TaskResult.objects.filter(task_id=str(job.task_id)).exists()


def test_a_result_that_does_not_fit_fails_the_next_step_at_once(tenant_db):
    workflow, job, step = _running_first_step(tenant_db.acme)
    with tenant_db.acme:
        assert workflow_step_succeed(step=step, success=_success(job, "three"), result="three")
        following = Job.objects.get(workflow=workflow, position=2)
    assert following.status == JobStatus.FAILED
    assert "does not fit as input" in following.error
    assert following.finished_at is not None


def test_the_one_job_insert_writes_what_djangos_compiler_writes(tenant_db):
    from jobs.services.submission import job_insert_sql, jobs_insert_sql

    job = Job(type="demo.add", args={"x": 1, "input": 2}, queue="default", submitted_by="test")
    with tenant_db.acme:
        compiled_sql, compiled = jobs_insert_sql([job])
        job._state.adding = True
        sql, params = job_insert_sql(job)
    assert sql == compiled_sql
    created = [field.attname for field in Job._meta.concrete_fields].index("created_at")

    def comparable(values: list[Any]) -> list[tuple[type, Any]]:
        # psycopg's Jsonb wrapper compares by identity: compare what it wraps.
        return [(type(v), getattr(v, "obj", v)) for n, v in enumerate(values) if n != created]

    assert comparable(params) == comparable(compiled)


def test_a_step_without_a_result_row_still_makes_its_next_job(tenant_db):
    """A job type with ignore_result: the same statement without the django-celery-results row."""
    workflow, job, step = _running_first_step(tenant_db.acme)
    success = JobSuccess(job_id=str(job.id), task_id=str(job.task_id), encoded_result="3")
    with tenant_db.acme:
        assert workflow_step_succeed(step=step, success=success, result=3)
        assert Job.objects.get(id=job.id).result == 3
        assert not TaskResult.objects.filter(task_id=str(job.task_id)).exists()
        following = Job.objects.get(workflow=workflow, position=2)
    assert (following.status, following.args) == (JobStatus.QUEUED, {"y": 3, "input": 3})


def test_a_next_step_whose_type_left_the_catalogue_is_made_failed(tenant_db):
    workflow, job, step = _running_first_step(tenant_db.acme)
    assert step.next_step is not None
    gone = StepInFlight(
        step.workflow_id,
        step.position,
        NextStep(type="demo.retired", args={"y": 3}, submitted_by=SUBMITTER),
    )
    with tenant_db.acme:
        assert workflow_step_succeed(step=gone, success=_success(job, 3), result=3)
        following = Job.objects.get(workflow=workflow, position=2)
    assert following.status == JobStatus.FAILED
    assert following.error == "the job type demo.retired no longer exists"
