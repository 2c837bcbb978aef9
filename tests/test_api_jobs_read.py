"""GET /api/v1/jobs/{id} (with its attempts and why it waits), GET /api/v1/jobs and
GET /api/v1/job-types."""

from __future__ import annotations

import uuid
from datetime import datetime

import pytest

from tests.api_client import call
from tests.jobs_helpers import queued_job, run_until_final


def _submit(key: str, x: int = 1, job_type: str = "demo.add") -> dict:
    args = {"x": x, "y": 1} if job_type == "demo.add" else {"message": "m"}
    answer = call(
        "POST", "/jobs", key=key, body={"type": job_type, "args": args, "delay_seconds": 3600}
    )
    assert answer.status == 202
    return answer.body


def test_it_returns_one_job_in_the_contracts_shape(tenant_db):
    job = _submit(tenant_db.acme_key)
    answer = call("GET", f"/jobs/{job['id']}", key=tenant_db.acme_key)
    assert answer.status == 200
    assert set(answer.body) >= {
        "id", "type", "args", "status", "attempts", "result", "error", "submitted_by",
        "schedule", "created_at", "run_at", "started_at", "finished_at",
    }  # fmt: skip
    assert answer.body["id"] == job["id"]


def test_globex_cannot_see_acmes_job(tenant_db):
    job = _submit(tenant_db.acme_key)
    answer = call("GET", f"/jobs/{job['id']}", key=tenant_db.globex_key)
    assert (answer.status, answer.error_code) == (404, "not_found")


def test_an_unknown_or_malformed_id_is_a_404(tenant_db):
    assert call("GET", f"/jobs/{uuid.uuid4()}", key=tenant_db.acme_key).status == 404
    assert call("GET", "/jobs/not-a-uuid", key=tenant_db.acme_key).status == 404


def test_the_list_is_newest_first_and_pages_with_a_cursor(tenant_db):
    mine = [_submit(tenant_db.globex_key, x)["id"] for x in range(5)]
    seen: list[str] = []
    cursor = None
    while True:
        path = "/jobs?limit=2&type=demo.add" + (f"&cursor={cursor}" if cursor else "")
        page = call("GET", path, key=tenant_db.globex_key)
        assert page.status == 200
        seen.extend(item["id"] for item in page.body["items"])
        cursor = page.body["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == len(set(seen))
    # The five just submitted come first, newest first.
    assert seen[:5] == list(reversed(mine))


def test_the_list_filters_by_status_and_type(tenant_db):
    _submit(tenant_db.acme_key, job_type="demo.fail")
    page = call("GET", "/jobs?status=scheduled&type=demo.fail", key=tenant_db.acme_key)
    assert page.status == 200
    assert page.body["items"]
    assert {(i["status"], i["type"]) for i in page.body["items"]} == {("scheduled", "demo.fail")}


def test_the_list_refuses_bad_filters_and_cursors(tenant_db):
    assert call("GET", "/jobs?status=weird", key=tenant_db.acme_key).status == 422
    assert call("GET", "/jobs?limit=0", key=tenant_db.acme_key).status == 422
    assert call("GET", "/jobs?limit=201", key=tenant_db.acme_key).status == 422
    answer = call("GET", "/jobs?cursor=bm9wZQ", key=tenant_db.acme_key)
    assert (answer.status, answer.error_code) == (422, "invalid_cursor")


def test_globex_never_lists_acmes_jobs(tenant_db):
    acme_ids = {_submit(tenant_db.acme_key)["id"] for _ in range(3)}
    page = call("GET", "/jobs?limit=200", key=tenant_db.globex_key)
    assert acme_ids.isdisjoint({item["id"] for item in page.body["items"]})


def test_job_types_say_whether_they_are_cancellable(tenant_db):
    types = {t["name"]: t for t in call("GET", "/job-types", key=tenant_db.acme_key).body}
    assert types["email.send"]["cancellable"] is False
    assert types["demo.sleep"]["cancellable"] is True


def test_job_types_lists_the_catalogue_with_schemas(tenant_db):
    answer = call("GET", "/job-types", key=tenant_db.acme_key)
    assert answer.status == 200
    by_name = {item["name"]: item for item in answer.body}
    assert {"demo.add", "demo.sleep", "demo.fail"} <= set(by_name)
    assert by_name["demo.add"]["args_schema"]["required"] == ["x", "y"]


def test_job_types_needs_a_key(tenant_db):
    assert call("GET", "/job-types", key=None).status == 401


# --- one job's history and why it waits ------------------------------------------------------


def test_one_job_shows_every_attempt_across_a_retry_with_outcome_and_error(tenant_db):
    job = queued_job(tenant_db.acme, "demo.fail", {"message": "boom"}, max_attempts=3)
    run_until_final(tenant_db.acme, job)
    assert call("POST", f"/jobs/{job.id}/retry", key=tenant_db.acme_key).status == 202
    # The retry's message is in the broker; this test delivers it itself, to the end, so that
    # message is stale by the time any worker sees it.
    run_until_final(tenant_db.acme, job)
    answer = call("GET", f"/jobs/{job.id}", key=tenant_db.acme_key)
    assert answer.status == 200
    body = answer.body
    assert (body["status"], body["attempts"]) == ("failed", 6)
    assert body["waiting_reason"] is None
    log = body["attempts_log"]
    assert [(a["number"], a["cause"], a["outcome"]) for a in log] == [
        (1, "submitted", "retrying"),
        (2, "retry", "retrying"),
        (3, "retry", "failed"),
        (4, "user_retry", "retrying"),
        (5, "retry", "retrying"),
        (6, "retry", "failed"),
    ]
    for attempt in log:
        assert attempt["error"] == "jobs.catalogue.demo_fail.DemoFailure: boom"
        assert "raise DemoFailure" in attempt["traceback"]
        assert attempt["worker"]
        started = datetime.fromisoformat(attempt["started_at"])
        finished = datetime.fromisoformat(attempt["finished_at"])
        assert datetime.fromisoformat(attempt["queued_at"])
        # The JSON times are to the millisecond; the duration is exact.
        expected = (finished - started).total_seconds()
        assert attempt["duration_seconds"] == pytest.approx(expected, abs=0.002)


def test_a_retried_job_waits_queued_with_its_history_kept(tenant_db):
    job = queued_job(tenant_db.acme, "demo.fail", {"message": "boom"}, max_attempts=3)
    run_until_final(tenant_db.acme, job)
    retried = call("POST", f"/jobs/{job.id}/retry", key=tenant_db.acme_key).body
    assert retried["attempts"] == 3
    body = call("GET", f"/jobs/{job.id}", key=tenant_db.acme_key).body
    assert body["status"] == "queued"
    assert body["waiting_reason"]["code"] == "queued"
    assert [a["outcome"] for a in body["attempts_log"]] == ["retrying", "retrying", "failed"]
    run_until_final(tenant_db.acme, job)  # its message must find the job ended (see above)


def test_a_scheduled_job_says_why_it_waits_and_has_no_attempts(tenant_db):
    job = _submit(tenant_db.acme_key)
    body = call("GET", f"/jobs/{job['id']}", key=tenant_db.acme_key).body
    assert body["waiting_reason"]["code"] == "scheduled"
    assert job["run_at"][:19] in body["waiting_reason"]["message"]
    assert body["attempts_log"] == []


def test_globex_cannot_read_acmes_job_or_its_attempts(tenant_db):
    job = queued_job(tenant_db.acme, "demo.fail", {"message": "secret"}, max_attempts=1)
    run_until_final(tenant_db.acme, job)
    mine = call("GET", f"/jobs/{job.id}", key=tenant_db.acme_key).body
    assert [a["error"] for a in mine["attempts_log"]] == [
        "jobs.catalogue.demo_fail.DemoFailure: secret"
    ]
    answer = call("GET", f"/jobs/{job.id}", key=tenant_db.globex_key)
    assert (answer.status, answer.error_code) == (404, "not_found")
    assert "secret" not in str(answer.body)


def test_the_list_leaves_the_history_out(tenant_db):
    job = queued_job(tenant_db.acme, "demo.fail", {"message": "boom"}, max_attempts=1)
    run_until_final(tenant_db.acme, job)
    assert len(call("GET", f"/jobs/{job.id}", key=tenant_db.acme_key).body["attempts_log"]) == 1
    page = call("GET", "/jobs?type=demo.fail&status=failed&limit=5", key=tenant_db.acme_key).body
    [item] = [i for i in page["items"] if i["id"] == str(job.id)]
    assert item["attempts"] == 1
    assert "attempts_log" not in item
    assert "waiting_reason" not in item
