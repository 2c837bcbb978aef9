"""Cancelling running jobs and workflows on real worker processes, by the job type's
`cancellable` flag: a cancellable type's running job is stopped (its prefork process terminated,
or on a thread pool at its next progress report), ends `cancelled` with its attempt recorded
and its slot freed, and never runs again; a running `email.send` (not cancellable) finishes,
and a workflow's cancel then cancels only the steps after it.

The prefork worker has one process: a job it runs after a cancelled `demo.sleep` of two minutes
finishes within seconds only if the sleep was really stopped.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from saas_platform.lib.state_redis import state_redis

from jobs.models import Job, JobStatus
from jobs.services.dispatch import inflight_key
from jobs.services.transitions import job_cancel
from tests.api_client import call
from tests.jobs_helpers import job_in, submit, wait_final, workflow_detail
from tests.workers import REPO, WorkerProcess, wait_for

pytestmark = [pytest.mark.worker, pytest.mark.slow]

_SLOW_EMAIL = {
    "PYTHONPATH": str(REPO),
    "EMAIL_BACKEND": "tests.slow_email.SlowEmailBackend",
    "SLOW_EMAIL_SECONDS": "4",
    "DEFAULT_FROM_EMAIL": "jobs@platform.test",
}
_LONG_SLEEP = {"seconds": 120}
# Far below _LONG_SLEEP: what "stopped quickly" means here, on a loaded 2-core machine.
_QUICKLY = 20


@pytest.fixture(scope="module")
def worker(actors: Any, django_db_blocker: Any) -> Iterator[WorkerProcess]:
    with WorkerProcess(pool="prefork", concurrency=1, env=_SLOW_EMAIL) as process:
        yield process


def _running_job(tenant: Any, workflow_id: str, position: int) -> Job:
    def running() -> Job | None:
        job = workflow_detail(tenant, workflow_id).steps[position - 1].job
        return job if job is not None and job.status == JobStatus.RUNNING else None

    found: Job = wait_for(running, timeout=60, what=f"step {position} to run")
    return found


def _wait_running(tenant: Any, job_id: Any) -> Job:
    found: Job = wait_for(
        lambda: (job := job_in(tenant, job_id)).status == JobStatus.RUNNING and job,
        timeout=60,
        what=f"job {job_id} to run",
    )
    return found


def _assert_stopped(tenant: Any, job: Job, worker: WorkerProcess, cancelled_at: float) -> None:
    """The worker's only process is free again (a job after it runs), the job ended cancelled
    with its one attempt recorded, its slot is free, and it did not run again."""
    after = submit(tenant, "demo.add", {"x": 1, "y": 2})
    [done] = wait_final(tenant, [after.id], timeout=_QUICKLY)
    assert done.status == "succeeded", worker.output()
    assert time.monotonic() - cancelled_at < _QUICKLY
    stopped = job_in(tenant, job.id)
    assert (stopped.status, stopped.attempts, stopped.error) == ("cancelled", 1, "cancelled")
    with tenant:
        attempts = list(stopped.attempt_rows.values_list("outcome", flat=True))
    assert attempts == ["cancelled"]
    assert not state_redis().sismember(inflight_key(tenant.pk), str(job.task_id))


def test_cancelling_a_workflow_stops_its_running_cancellable_step(tenant_db, worker):
    steps = [
        {"type": "demo.sleep", "args": _LONG_SLEEP},
        {"type": "demo.fail", "args": {"message": "never reached"}},
    ]
    created = call("POST", "/workflows", key=tenant_db.acme_key, body={"steps": steps}).body
    first = _running_job(tenant_db.acme, created["id"], 1)
    answer = call("POST", f"/workflows/{created['id']}/cancel", key=tenant_db.acme_key)
    cancelled_at = time.monotonic()
    assert answer.status == 200, answer.body
    assert (answer.body["status"], [s["status"] for s in answer.body["steps"]]) == (
        "cancelled",
        ["cancelled", "cancelled"],
    )
    _assert_stopped(tenant_db.acme, first, worker, cancelled_at)
    assert worker.count(f"terminating the process running {first.task_id}") == 1, worker.output()
    detail = workflow_detail(tenant_db.acme, created["id"])
    assert (detail.status, detail.steps[1].job) == ("cancelled", None)


def _cancelled_while_mailing(tenant_db: Any, subject: str) -> tuple[str, Job, Any]:
    """A workflow whose first step, an email.send, is cancelled while it runs: its id, that
    step's job, and the cancel's answer."""
    steps = [
        {"type": "email.send", "args": {"to": "dave@example.com", "subject": subject, "body": "b"}},
        {"type": "demo.fail", "args": {"message": "never reached"}},
    ]
    created = call("POST", "/workflows", key=tenant_db.acme_key, body={"steps": steps}).body
    first = _running_job(tenant_db.acme, created["id"], 1)
    answer = call("POST", f"/workflows/{created['id']}/cancel", key=tenant_db.acme_key)
    assert answer.status == 200, answer.body
    return created["id"], first, answer


def test_a_running_step_that_is_not_cancellable_finishes_and_the_rest_are_cancelled(
    tenant_db, worker
):
    workflow_id, first, answer = _cancelled_while_mailing(tenant_db, "s")
    # Accepted: the step finishes first, and the one after it will never run.
    assert answer.body["status"] == "running"
    assert [s["status"] for s in answer.body["steps"]] == ["running", "cancelled"]
    assert answer.body["cancelled_at"] is not None
    again = call("POST", f"/workflows/{workflow_id}/cancel", key=tenant_db.acme_key)
    assert (again.status, again.error_code) == (409, "not_cancellable")

    [sent] = wait_final(tenant_db.acme, [first.id])
    assert (sent.status, sent.result, sent.attempts) == ("succeeded", {"sent": 1}, 1)
    final = call("GET", f"/workflows/{workflow_id}", key=tenant_db.acme_key).body
    assert (final["status"], [s["status"] for s in final["steps"]]) == (
        "cancelled",
        ["succeeded", "cancelled"],
    )
    assert final["steps"][1]["job"] is None
    assert worker.count(f"terminating the process running {first.task_id}") == 0


def test_a_step_that_is_not_cancellable_is_not_retried_after_its_workflows_cancel(
    tenant_db, worker
):
    workflow_id, first, _answer = _cancelled_while_mailing(tenant_db, "fail")
    # Its attempt fails (the connection drops) with attempts left: it would be retried.
    [ended] = wait_final(tenant_db.acme, [first.id])
    assert (ended.status, ended.attempts) == ("cancelled", 1)
    assert ended.error.startswith("cancelled with its workflow; its last attempt failed:")
    with tenant_db.acme:
        [attempt] = ended.attempt_rows.all()
    assert attempt.outcome == "failed"
    assert "dropped the connection" in attempt.error
    assert workflow_detail(tenant_db.acme, workflow_id).status == "cancelled"


def test_cancelling_a_running_job_follows_its_types_flag(tenant_db, worker):
    sleeping = submit(tenant_db.acme, "demo.sleep", _LONG_SLEEP)
    _wait_running(tenant_db.acme, sleeping.id)
    answer = call("POST", f"/jobs/{sleeping.id}/cancel", key=tenant_db.acme_key)
    cancelled_at = time.monotonic()
    assert (answer.status, answer.body["status"]) == (200, "cancelled")
    _assert_stopped(tenant_db.acme, job_in(tenant_db.acme, sleeping.id), worker, cancelled_at)

    mail = submit(
        tenant_db.acme, "email.send", {"to": "e@example.com", "subject": "s", "body": "b"}
    )
    _wait_running(tenant_db.acme, mail.id)
    refused = call("POST", f"/jobs/{mail.id}/cancel", key=tenant_db.acme_key)
    assert (refused.status, refused.error_code) == (409, "not_cancellable")
    assert "cannot be stopped" in refused.body["error"]["message"]
    [sent] = wait_final(tenant_db.acme, [mail.id])
    assert (sent.status, sent.result) == ("succeeded", {"sent": 1})


def test_a_thread_pool_worker_stops_a_cancelled_job_at_its_next_progress_report(tenant_db):
    # A queue of this test's own: only this worker, which cannot terminate a thread, runs it.
    queue = f"cancel-{uuid.uuid4().hex[:12]}"
    with WorkerProcess(pool="threads", concurrency=1, queues=queue) as process:
        sleeping = submit(tenant_db.acme, "demo.sleep", _LONG_SLEEP, queue=queue)
        running = _wait_running(tenant_db.acme, sleeping.id)
        with tenant_db.acme:
            job_cancel(job=running)
        cancelled_at = time.monotonic()
        wait_for(
            lambda: process.count(f"job {sleeping.id} stopped: it was cancelled"),
            timeout=10,
            what="the job to stop at its next progress report",
        )
        after = submit(tenant_db.acme, "demo.add", {"x": 2, "y": 3}, queue=queue)
        [done] = wait_final(tenant_db.acme, [after.id], timeout=_QUICKLY)
        assert done.status == "succeeded", process.output()
        assert time.monotonic() - cancelled_at < _QUICKLY
    stopped = job_in(tenant_db.acme, sleeping.id)
    assert (stopped.status, stopped.attempts) == ("cancelled", 1)
    with tenant_db.acme:
        assert list(stopped.attempt_rows.values_list("outcome", flat=True)) == ["cancelled"]
