"""POST /api/v1/jobs/batch, /jobs/{id}/cancel, /jobs/{id}/retry, and GET /api/v1/usage."""

from __future__ import annotations

import uuid

import pytest

from jobs.models import Job
from tests.api_client import call
from tests.jobs_helpers import dispatch_now, queued_job, submit, wait_final
from tests.schemas import schemas_holding
from tests.workers import WorkerProcess, wait_for


def _count(tenant) -> int:
    with tenant:
        return Job.objects.count()


def _add(x: int) -> dict:
    return {"type": "demo.add", "args": {"x": x, "y": 1}}


# --- batch -----------------------------------------------------------------------------------


def test_a_batch_is_accepted_whole(tenant_db):
    answer = call(
        "POST", "/jobs/batch", key=tenant_db.acme_key, body={"jobs": [_add(i) for i in range(50)]}
    )
    assert answer.status == 202
    assert len(answer.body["jobs"]) == 50
    with tenant_db.acme:
        assert Job.objects.filter(id__in=[j["id"] for j in answer.body["jobs"]]).count() == 50


def test_a_batch_with_one_bad_job_writes_none_and_says_which(tenant_db):
    before = _count(tenant_db.acme)
    jobs = [_add(i) for i in range(10)]
    jobs[7] = {"type": "demo.add", "args": {"x": "seven", "y": 1}}
    answer = call("POST", "/jobs/batch", key=tenant_db.acme_key, body={"jobs": jobs})
    assert (answer.status, answer.error_code) == (422, "invalid_args")
    assert answer.body["error"]["details"]["index"] == 7
    assert _count(tenant_db.acme) == before


def test_a_batch_over_1000_or_empty_is_refused(tenant_db):
    before = _count(tenant_db.acme)
    assert (
        call("POST", "/jobs/batch", key=tenant_db.acme_key, body={"jobs": [_add(1)] * 1001}).status
        == 422
    )
    assert call("POST", "/jobs/batch", key=tenant_db.acme_key, body={"jobs": []}).status == 422
    assert _count(tenant_db.acme) == before


def test_a_batch_of_1000_is_accepted(tenant_db):
    jobs = [{**_add(i), "delay_seconds": 3600} for i in range(1000)]
    answer = call("POST", "/jobs/batch", key=tenant_db.globex_key, body={"jobs": jobs})
    assert answer.status == 202
    assert len(answer.body["jobs"]) == 1000


def test_a_batch_needs_the_write_scope(tenant_db):
    from tenants.services import apikey_create

    read_only = apikey_create(tenant=tenant_db.acme, scopes=["jobs:read"]).plaintext
    assert call("POST", "/jobs/batch", key=read_only, body={"jobs": [_add(1)]}).status == 403


# --- cancel ----------------------------------------------------------------------------------


def _scheduled(key: str) -> dict:
    answer = call("POST", "/jobs", key=key, body={**_add(1), "delay_seconds": 3600})
    assert answer.status == 202
    return answer.body


def test_it_cancels_a_job_not_yet_finished(tenant_db):
    job = _scheduled(tenant_db.acme_key)
    answer = call("POST", f"/jobs/{job['id']}/cancel", key=tenant_db.acme_key)
    assert (answer.status, answer.body["status"]) == (200, "cancelled")
    again = call("POST", f"/jobs/{job['id']}/cancel", key=tenant_db.acme_key)
    assert (again.status, again.error_code) == (409, "not_cancellable")


def test_globex_cannot_cancel_acmes_job(tenant_db):
    job = _scheduled(tenant_db.acme_key)
    answer = call("POST", f"/jobs/{job['id']}/cancel", key=tenant_db.globex_key)
    assert answer.status == 404
    with tenant_db.acme:
        assert Job.objects.get(id=job["id"]).status == "scheduled"


def _email(tenant, status: str) -> Job:
    job = queued_job(tenant, "email.send", {"to": "a@example.com", "subject": "s", "body": "b"})
    with tenant:
        Job.objects.filter(id=job.id).update(status=status)
    return job


def test_a_running_job_of_a_type_that_is_not_cancellable_is_refused_and_keeps_running(tenant_db):
    job = _email(tenant_db.acme, "running")
    answer = call("POST", f"/jobs/{job.id}/cancel", key=tenant_db.acme_key)
    assert (answer.status, answer.error_code) == (409, "not_cancellable")
    assert "a running email.send job cannot be stopped" in answer.body["error"]["message"]
    with tenant_db.acme:
        assert Job.objects.get(id=job.id).status == "running"


def test_a_job_of_a_type_that_is_not_cancellable_is_cancelled_before_it_starts(tenant_db):
    job = _email(tenant_db.acme, "queued")
    answer = call("POST", f"/jobs/{job.id}/cancel", key=tenant_db.acme_key)
    assert (answer.status, answer.body["status"]) == (200, "cancelled")


@pytest.mark.worker
@pytest.mark.slow
def test_a_cancelled_job_never_runs_even_with_its_message_in_the_broker(tenant_db):
    # A queue no running worker consumes: the message waits in the broker, and the cancel's
    # revoke broadcast reaches no worker that will ever receive it. Only the runner's claim,
    # which refuses a cancelled job, stands between the message and a run.
    queue = f"cancel-{uuid.uuid4().hex[:12]}"
    job = submit(tenant_db.acme, "demo.add", {"x": 1, "y": 1}, queue=queue)
    assert dispatch_now(tenant_db.acme, queue) == 1  # its message is in the broker now
    answer = call("POST", f"/jobs/{job.id}/cancel", key=tenant_db.acme_key)
    assert (answer.status, answer.body["status"]) == (200, "cancelled")
    control = submit(tenant_db.acme, "demo.add", {"x": 2, "y": 1}, queue=queue)
    with WorkerProcess(pool="prefork", concurrency=1, queues=queue) as worker:
        wait_final(tenant_db.acme, [control.id])
        wait_for(
            lambda: worker.count(f"demo.add[{job.task_id}] received"),
            what="the worker to receive the cancelled job's message",
        )
        with tenant_db.acme:
            cancelled = Job.objects.get(id=job.id)
        assert (cancelled.status, cancelled.attempts, cancelled.result) == ("cancelled", 0, None)
        assert schemas_holding("django_celery_results_taskresult", "task_id", [job.task_id]) == {
            str(job.task_id): set()
        }
        # Celery's own revoke list did not stop it (the broadcast went to nobody): the claim
        # refused the job and the runner dropped the message.
        assert worker.count("Discarding revoked task") == 0, worker.output()
        wait_for(
            lambda: worker.count(f"demo.add[{job.task_id}] ignored"),
            what="the runner to drop the cancelled job's message",
        )


# --- retry -----------------------------------------------------------------------------------


def test_only_failed_or_cancelled_jobs_can_be_retried(tenant_db):
    job = _scheduled(tenant_db.acme_key)
    answer = call("POST", f"/jobs/{job['id']}/retry", key=tenant_db.acme_key)
    assert (answer.status, answer.error_code) == (409, "not_retryable")


def test_globex_cannot_retry_acmes_job(tenant_db):
    job = _scheduled(tenant_db.acme_key)
    call("POST", f"/jobs/{job['id']}/cancel", key=tenant_db.acme_key)
    assert call("POST", f"/jobs/{job['id']}/retry", key=tenant_db.globex_key).status == 404


@pytest.mark.worker
def test_a_retried_job_runs_again_as_a_new_attempt(tenant_db, prefork_worker):
    job = _scheduled(tenant_db.acme_key)
    call("POST", f"/jobs/{job['id']}/cancel", key=tenant_db.acme_key)
    with tenant_db.acme:
        old_task_id = Job.objects.get(id=job["id"]).task_id
    answer = call("POST", f"/jobs/{job['id']}/retry", key=tenant_db.acme_key)
    assert (answer.status, answer.body["status"]) == (202, "queued")
    [done] = wait_final(tenant_db.acme, [job["id"]])
    assert (done.status, done.result, done.attempts) == ("succeeded", 2, 1)
    assert done.task_id != old_task_id


# --- usage -----------------------------------------------------------------------------------


def test_usage_reports_this_periods_jobs_and_the_plans_limits(tenant_db):
    before = call("GET", "/usage", key=tenant_db.globex_key).body["usage"]["jobs"]
    call("POST", "/jobs", key=tenant_db.globex_key, body=_add(1))
    answer = call("GET", "/usage", key=tenant_db.globex_key)
    assert answer.status == 200
    assert answer.body["plan"] == "pro"
    assert answer.body["usage"]["jobs"] == before + 1
    limits = answer.body["limits"]
    # CONTRACT.md's fields, and each limit's burst beside it.
    assert set(limits) == {
        "jobs_per_month",
        "submit_rate",
        "submit_burst",
        "concurrency",
        "schedules",
        "min_interval_seconds",
        "rates",
        "bursts",
        "fairness_weight",
    }
    assert limits["rates"]["demo.add"] == "50/s"  # pro scales the 10/s default by 5
    assert limits["bursts"]["demo.add"] == 50  # one second's worth
    assert limits["rates"]["email.send"] == "5/s"  # its own annotation, 1/s, scaled


def test_usage_is_per_tenant(tenant_db):
    acme = call("GET", "/usage", key=tenant_db.acme_key).body
    call("POST", "/jobs", key=tenant_db.globex_key, body=_add(1))
    assert (
        call("GET", "/usage", key=tenant_db.acme_key).body["usage"]["jobs"] == acme["usage"]["jobs"]
    )
    assert acme["plan"] == "free"


def test_a_batch_lands_in_the_keys_tenant_only(tenant_db):
    answer = call(
        "POST", "/jobs/batch", key=tenant_db.globex_key, body={"jobs": [_add(1), _add(2)]}
    )
    ids = [j["id"] for j in answer.body["jobs"]]
    with tenant_db.globex:
        assert Job.objects.filter(id__in=ids).count() == 2
    with tenant_db.acme:
        assert not Job.objects.filter(id__in=ids).exists()
    assert all(call("GET", f"/jobs/{i}", key=tenant_db.acme_key).status == 404 for i in ids)


def test_a_batch_refused_for_a_bad_value_says_which_job(tenant_db):
    jobs = [_add(1), {**_add(2), "delay_seconds": 5, "run_at": "2030-01-01T00:00:00Z"}]
    answer = call("POST", "/jobs/batch", key=tenant_db.acme_key, body={"jobs": jobs})
    assert (answer.status, answer.error_code) == (422, "invalid_schedule")
    assert answer.body["error"]["details"]["index"] == 1
