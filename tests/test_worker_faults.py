"""Jobs that end outside the task (lost child, hard time limit, revoked) are recorded in their own
tenant's schema, never in public, never left running; the worker keeps going."""

from __future__ import annotations

import os
import signal

import pytest
from django.db import transaction
from django_celery_results.models import TaskResult
from saas_platform.celery_app import app

from jobs.services.submission import JobRequest, job_submit
from tests.jobs_helpers import job_in, submit, wait_final
from tests.schemas import schemas_holding
from tests.workers import WorkerProcess, wait_for

pytestmark = [pytest.mark.worker, pytest.mark.slow]

# What the worker's main process logs when a pool child dies under a task (killed here on purpose).
CHILD_LOST = r"Task handler raised error: WorkerLostError\('Worker exited prematurely: signal 9"


@pytest.fixture
def worker(tenant_db):
    # A fresh worker per test: these tests kill its children.
    with WorkerProcess(pool="prefork", concurrency=2) as process:
        yield process


def _running_pid(tenant, job_id) -> int:
    def running() -> int | None:
        job = job_in(tenant, job_id)
        if job.status == "running" and job.worker:
            return int(job.worker.rsplit(":", 1)[1])
        return None

    pid: int = wait_for(running, what="the job to start running")
    return pid


def _result_status(tenant, job_id) -> str:
    # A task that fails marks its Job first, then Celery stores the result: wait for the row.
    def stored() -> str | None:
        with tenant:
            row = TaskResult.objects.filter(task_id=str(job_id)).first()
        return row.status if row is not None else None

    status: str = wait_for(stored, timeout=10, what="the result row")
    return status


def _assert_rows_only_in(schema: str, job_id) -> None:
    assert schemas_holding("jobs_job", "id", [job_id])[str(job_id)] == {schema}
    holders = schemas_holding("django_celery_results_taskresult", "task_id", [job_id])
    assert holders[str(job_id)] == {schema}


def test_a_job_whose_child_is_killed_runs_again_and_ends_in_its_schema(tenant_db, worker):
    worker.allow(CHILD_LOST)
    job = submit(tenant_db.globex, "demo.sleep", {"seconds": 2})
    os.kill(_running_pid(tenant_db.globex, job.id), signal.SIGKILL)
    [done] = wait_final(tenant_db.globex, [job.id])
    assert done.status == "succeeded"
    assert done.attempts == 2  # the lost attempt counted, then a redelivery ran it
    _assert_rows_only_in("globex", job.id)
    assert worker.alive


def test_a_job_that_keeps_killing_its_child_fails_for_good_in_its_schema(tenant_db, worker):
    job = submit(tenant_db.globex, "demo.sleep", {"seconds": 30})
    worker.allow(
        CHILD_LOST,
        # The redelivery after the last kill finds no attempt left and fails the job.
        rf"demo\.sleep\[{job.task_id}\] raised unexpected: AttemptsExhausted",
    )
    for _ in range(job.max_attempts):
        pid = _running_pid(tenant_db.globex, job.id)
        os.kill(pid, signal.SIGKILL)
        wait_for(
            lambda pid=pid: (
                job_in(tenant_db.globex, job.id).worker.rsplit(":", 1)[1] != str(pid)
                or job_in(tenant_db.globex, job.id).is_final
            ),
            what="the next attempt",
        )
    [done] = wait_final(tenant_db.globex, [job.id])
    assert done.status == "failed"
    assert "worker lost" in done.error
    assert _result_status(tenant_db.globex, job.id) == "FAILURE"
    _assert_rows_only_in("globex", job.id)
    assert worker.alive


def test_a_job_over_its_hard_time_limit_fails_in_its_schema(tenant_db, worker):
    job = submit(tenant_db.acme, "demo.sleep", {"seconds": 30}, time_limit_seconds=1)
    worker.allow(
        rf"Hard time limit \(1s\) exceeded for demo\.sleep\[{job.task_id}\]",
        r"Task handler raised error: TimeLimitExceeded\(1\)",
    )
    [done] = wait_final(tenant_db.acme, [job.id])
    assert done.status == "failed"
    assert "TimeLimitExceeded" in done.error
    # Written by the worker's main process: the backend found the tenant in the request.
    assert _result_status(tenant_db.acme, job.id) == "FAILURE"
    _assert_rows_only_in("acme", job.id)
    # The worker is still serving.
    after = submit(tenant_db.acme, "demo.add", {"x": 1, "y": 1})
    assert wait_final(tenant_db.acme, [after.id])[0].status == "succeeded"
    assert worker.alive


def test_a_job_revoked_before_a_worker_received_it_is_cancelled_in_its_schema(tenant_db, worker):
    # A fresh worker can miss a broadcast sent just after its "ready" (a fresh clone's run: the
    # job succeeded); the test is of what a revoke that arrives does, so it waits for that.
    worker.wait_controllable()
    with tenant_db.initech, transaction.atomic():
        job = job_submit(
            request=JobRequest(type="demo.add", args={"x": 1, "y": 2}), submitted_by="operator"
        )
        # Revoked while the row is uncommitted, so before any message exists.
        app.control.revoke(str(job.task_id))
    [done] = wait_final(tenant_db.initech, [job.id])
    assert done.status == "cancelled"
    assert done.result is None
    assert _result_status(tenant_db.initech, job.id) == "REVOKED"
    _assert_rows_only_in("initech", job.id)
    after = submit(tenant_db.initech, "demo.add", {"x": 1, "y": 1})
    assert wait_final(tenant_db.initech, [after.id])[0].status == "succeeded"
    assert worker.alive


def test_results_have_no_table_in_public_so_a_write_without_a_tenant_fails_loudly(tenant_db):
    from tests.schemas import schemas_with_table

    holders = set(schemas_with_table("django_celery_results_taskresult"))
    assert "public" not in holders
    assert {"acme", "globex", "initech"} <= holders
