"""Workflows on real worker processes: a chain's result, a step that fails for good and the
workflow's retry resuming there, and a job type with ignore_result. The worker killed between
two steps is tests/test_workflows_worker_death.py (it needs no other worker around); a workflow
cancelled while a step runs is tests/test_job_cancel_worker.py."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from django.db.models import F
from django.utils import timezone
from django_celery_results.models import TaskResult

from jobs.fairness import tenant_mark_ready
from jobs.models import Job, JobStatus
from jobs.selectors import WorkflowDetail
from tests.api_client import call
from tests.http_server import LocalServer
from tests.jobs_helpers import submit, wait_final, workflow_detail
from tests.schemas import schemas_holding
from tests.workers import WorkerProcess, wait_for

pytestmark = [pytest.mark.worker, pytest.mark.slow]


@pytest.fixture(scope="module")
def worker(actors: Any, django_db_blocker: Any) -> Iterator[WorkerProcess]:
    env = {
        # http.request may call the test's server on 127.0.0.1, nothing else private.
        "OUTBOUND_HTTP_ALLOWED_NETWORKS": "127.0.0.1/32",
        "EMAIL_BACKEND": "django.core.mail.backends.locmem.EmailBackend",
        "DEFAULT_FROM_EMAIL": "jobs@platform.test",
    }
    with WorkerProcess(pool="prefork", concurrency=2, env=env) as process:
        yield process


@pytest.fixture
def server() -> Iterator[LocalServer]:
    with LocalServer() as running:
        yield running


def _wait_status(tenant: Any, workflow_id: str, *wanted: str, timeout: float = 60) -> Any:
    def ended() -> WorkflowDetail | None:
        detail = workflow_detail(tenant, workflow_id)
        return detail if detail.status in wanted else None

    return wait_for(ended, timeout=timeout, what=f"workflow {workflow_id} to be {wanted}")


def test_a_three_step_chain_adds_up_in_its_last_step(tenant_db, worker):
    answer = call(
        "POST",
        "/workflows",
        key=tenant_db.acme_key,
        body={
            "steps": [
                {"type": "demo.add", "args": {"x": 1, "y": 2}},
                {"type": "demo.add", "args": {"y": 3}},
                {"type": "demo.add", "args": {"y": 4}},
            ]
        },
    )
    assert answer.status == 202, answer.body
    detail = _wait_status(tenant_db.acme, answer.body["id"], "succeeded", "failed", "cancelled")
    assert detail.status == "succeeded", worker.output()
    jobs = [view.job for view in detail.steps]
    assert [job.result for job in jobs] == [3, 6, 10]
    # Each step's job names its workflow and position, and got the previous result as input.
    assert [(str(job.workflow_id), job.position) for job in jobs] == [
        (answer.body["id"], n) for n in (1, 2, 3)
    ]
    assert [job.args.get("input") for job in jobs] == [None, 3, 6]
    # A step starts only after the previous one finished.
    assert jobs[0].finished_at <= jobs[1].started_at
    assert jobs[1].finished_at <= jobs[2].started_at
    final = call("GET", f"/workflows/{answer.body['id']}", key=tenant_db.acme_key).body
    assert (final["status"], final["result"]) == ("succeeded", 10)
    # The rows are in acme's schema only: jobs, their results, the workflow and its steps.
    ids = [str(job.id) for job in jobs]
    assert all(job.ran_in_schema == "acme" for job in jobs)
    assert schemas_holding("jobs_job", "id", ids) == {i: {"acme"} for i in ids}
    assert schemas_holding("django_celery_results_taskresult", "task_id", ids) == {
        i: {"acme"} for i in ids
    }
    workflow_id = answer.body["id"]
    assert schemas_holding("jobs_workflow", "id", [workflow_id]) == {workflow_id: {"acme"}}
    steps = schemas_holding("jobs_workflowstep", "workflow_id", [workflow_id])
    assert steps == {workflow_id: {"acme"}}


def _skip_backoffs(tenant: Any, job_id: Any) -> Job | None:
    """Bring a waiting retry of the job forward to now and wake the dispatcher: the test does not
    wait out http.request's backoff (5 s, doubling). Returns the job once it has ended."""
    with tenant:
        Job.objects.filter(id=job_id, status=JobStatus.SCHEDULED).update(
            run_at=timezone.now(), queued_at=timezone.now()
        )
        job = Job.objects.get(id=job_id)
    tenant_mark_ready(tenant.pk, "default")
    return job if job.is_final else None


def test_a_failed_step_fails_the_workflow_and_its_retry_resumes_there(tenant_db, worker, server):
    key = uuid.uuid4().hex
    steps = [
        {"type": "demo.add", "args": {"x": 20, "y": 22}},
        {"type": "http.request", "args": {"method": "POST", "url": server.url(f"/switch?key={key}")}},
        {"type": "http.request", "args": {"method": "POST", "url": server.url("/echo")}},
    ]  # fmt: skip
    created = call("POST", "/workflows", key=tenant_db.acme_key, body={"steps": steps}).body
    second = wait_for(
        lambda: workflow_detail(tenant_db.acme, created["id"]).steps[1].job,
        what="the second step's job",
    )
    # Its 500s are retried, then it fails for good (http.request: 5 attempts).
    worker.allow(rf"http\.request\[{second.task_id}\] raised unexpected: RetryableHTTPStatus")
    wait_for(lambda: _skip_backoffs(tenant_db.acme, second.id), timeout=90, what="step 2 to fail")

    failed = _wait_status(tenant_db.acme, created["id"], "failed")
    assert [view.status for view in failed.steps] == ["succeeded", "failed", "cancelled"]
    assert failed.steps[2].job is None  # never made, so never run
    first = failed.steps[0].job
    assert failed.steps[1].job.attempts == 5
    assert "HTTP 500" in failed.steps[1].job.error
    api = call("GET", f"/workflows/{created['id']}", key=tenant_db.acme_key).body
    assert (api["status"], [s["status"] for s in api["steps"]]) == (
        "failed",
        ["succeeded", "failed", "cancelled"],
    )

    server.switches[key] = 200  # the cause is gone
    retried = call("POST", f"/workflows/{created['id']}/retry", key=tenant_db.acme_key)
    assert retried.status == 202, retried.body
    done = _wait_status(tenant_db.acme, created["id"], "succeeded", "failed")
    assert done.status == "succeeded", worker.output()
    jobs = [view.job for view in done.steps]
    # Step one kept its job and result: it did not run again.
    assert (jobs[0].id, jobs[0].result, jobs[0].attempts) == (first.id, 42, 1)
    assert jobs[0].finished_at == first.finished_at
    # Step two resumed as the same job, a sixth attempt; it sent step one's result as its body.
    assert (jobs[1].id, jobs[1].attempts, jobs[1].result["status_code"]) == (second.id, 6, 200)
    switch_calls = [r for r in server.requests if r["path"] == f"/switch?key={key}"]
    assert len(switch_calls) == 6
    assert {r["body"] for r in switch_calls} == {"42"}
    # Step three got step two's result as its input and posted it to /echo.
    echoed = jobs[2].result["body"]
    assert '\\"status_code\\": 200' in echoed


def test_a_job_type_with_ignore_result_leaves_no_result_row_and_still_succeeds(tenant_db, worker):
    sent = submit(
        tenant_db.acme, "email.send", {"to": "dave@example.com", "subject": "s", "body": "b"}
    )
    plain = submit(tenant_db.acme, "demo.add", {"x": 2, "y": 2})
    done = {job.id: job for job in wait_final(tenant_db.acme, [sent.id, plain.id])}
    assert (done[sent.id].status, done[sent.id].result) == ("succeeded", {"sent": 1})
    assert done[plain.id].status == "succeeded"
    with tenant_db.acme:
        attempt = done[sent.id].attempt_rows.get()
        assert attempt.outcome == "succeeded"
        assert not TaskResult.objects.filter(task_id=str(sent.task_id)).exists()
        # The type without the option keeps its row, as before.
        assert TaskResult.objects.filter(task_id=str(plain.task_id), status="SUCCESS").exists()
    assert schemas_holding("django_celery_results_taskresult", "task_id", [sent.task_id]) == {
        str(sent.task_id): set()
    }


def test_an_ignore_result_step_still_hands_its_result_on(tenant_db, worker):
    """email.send takes no input, so it is a first step; its result reaches an http.request...
    here a demo.fail would do too: any type that takes an object."""
    created = call(
        "POST",
        "/workflows",
        key=tenant_db.acme_key,
        body={
            "steps": [
                {"type": "email.send", "args": {"to": "e@example.com", "subject": "s", "body": "b"}},
                {"type": "demo.fail", "args": {"message": "after the mail"}},
            ]
        },
    ).body  # fmt: skip
    second = wait_for(
        lambda: workflow_detail(tenant_db.acme, created["id"]).steps[1].job, what="step two's job"
    )
    worker.allow(rf"demo\.fail\[{second.task_id}\] raised unexpected: DemoFailure")
    detail = _wait_status(tenant_db.acme, created["id"], "failed", timeout=90)
    assert detail.steps[1].job.args["input"] == {"sent": 1}
    with tenant_db.acme:
        assert Job.objects.filter(id=second.id, attempts=F("max_attempts")).exists()
