"""POST /api/v1/jobs: accepted means committed; bad input changes nothing."""

from __future__ import annotations

import logging
from datetime import timedelta

import pytest
from django.utils import timezone
from saas_platform.lib.state_redis import state_key, state_redis

from jobs.models import Job
from tests.api_client import call


def _count(tenant) -> int:
    with tenant:
        return Job.objects.count()


def test_it_accepts_a_job_with_202_and_commits_its_row(tenant_db):
    answer = call(
        "POST", "/jobs", key=tenant_db.acme_key, host="acme.localhost",
        body={"type": "demo.add", "args": {"x": 1, "y": 2}},
    )  # fmt: skip
    assert answer.status == 202
    assert answer.body["status"] == "queued"
    assert answer.body["submitted_by"].startswith("api_key:")
    with tenant_db.acme:
        job = Job.objects.get(id=answer.body["id"])
    assert (job.type, job.args) == ("demo.add", {"x": 1, "y": 2})
    # It waits in the table for the dispatcher, which its tenant's ready entry calls.
    assert job.published_at is None
    assert (
        state_redis().zscore(state_key("fair", "default", "ready"), tenant_db.acme.pk) is not None
    )


def test_the_job_lives_in_the_keys_tenant_only(tenant_db):
    answer = call(
        "POST",
        "/jobs",
        key=tenant_db.globex_key,
        body={"type": "demo.add", "args": {"x": 1, "y": 2}},
    )
    with tenant_db.globex:
        assert Job.objects.filter(id=answer.body["id"]).exists()
    with tenant_db.acme:
        assert not Job.objects.filter(id=answer.body["id"]).exists()


BAD_BODIES = [
    ({"type": "nope.nope", "args": {}}, 422, "unknown_job_type"),
    ({"type": "demo.add", "args": {"x": 1}}, 422, "invalid_args"),
    ({"type": "demo.add", "args": {"x": "1", "y": 2}}, 422, "invalid_args"),
    ({"type": "demo.add", "args": {"x": 1, "y": 2, "z": 3}}, 422, "invalid_args"),
    ({"type": "demo.add", "args": {"x": 1e16, "y": 2}}, 422, "invalid_args"),
    ({"type": "demo.add", "args": [1, 2]}, 422, "invalid_request"),
    ({"type": "demo.add", "args": {"x": 1, "y": 2}, "queue": "fast"}, 422, "invalid_request"),
    ({"type": "demo.add", "args": {"x": 1, "y": 2}, "task_id": "x"}, 422, "invalid_request"),
    ({"type": "demo.add", "args": {"x": 1, "y": 2}, "headers": {}}, 422, "invalid_request"),
    ({"type": "demo.add", "args": {"x": 1, "y": 2}, "tenant": "globex"}, 422, "invalid_request"),
    ({"type": "demo.add", "args": {"x": 1, "y": 2}, "schema_name": "x"}, 422, "invalid_request"),
    ({"type": "demo.add", "args": {"x": 1, "y": 2}, "delay_seconds": -1}, 422, "invalid_request"),
    ({"type": "demo.add", "args": {"x": 1, "y": 2}, "delay_seconds": 4e7}, 422, "invalid_request"),
    ({"type": "demo.add", "args": {"x": 1, "y": 2}, "priority": 10}, 422, "invalid_request"),
    # JSON types as documented, not pydantic's lax coercions (true as 1, "5" as 5, a Unix time).
    ({"type": "demo.add", "args": {"x": 1, "y": 2}, "priority": True}, 422, "invalid_request"),
    ({"type": "demo.add", "args": {"x": 1, "y": 2}, "priority": "5"}, 422, "invalid_request"),
    ({"type": "demo.add", "args": {"x": 1, "y": 2}, "delay_seconds": "60"}, 422, "invalid_request"),
    ({"type": "demo.add", "args": {"x": 1, "y": 2}, "delay_seconds": False}, 422, "invalid_request"),
    ({"type": "demo.add", "args": {"x": 1, "y": 2}, "run_at": 1893456000}, 422, "invalid_request"),
    ({"type": "demo.add", "args": {"x": 1, "y": 2}, "run_at": "2026-01-01T00:00:00"}, 422, "invalid_run_at"),
    ({"type": "demo.add", "args": {"x": 1, "y": 2}, "run_at": "yesterday"}, 422, "invalid_request"),
    ({"type": "demo.add", "args": {"x": 1, "y": 2}, "delay_seconds": 5, "run_at": "2030-01-01T00:00:00Z"}, 422, "invalid_schedule"),
    ({"type": 5, "args": {}}, 422, "invalid_request"),
    ({}, 422, "invalid_request"),
]  # fmt: skip


@pytest.mark.parametrize(("body", "status", "code"), BAD_BODIES)
def test_it_refuses_bad_input_and_writes_nothing(tenant_db, body, status, code):
    before = _count(tenant_db.acme)
    answer = call("POST", "/jobs", key=tenant_db.acme_key, body=body)
    assert (answer.status, answer.error_code) == (status, code), answer.body
    assert set(answer.body["error"]) == {"code", "message", "details"}
    assert _count(tenant_db.acme) == before


RAW_BODIES = [
    (b'{"type": "demo.add", "args": {"x": 1,', 400, "malformed_json"),
    (b"\xff\xfe", 400, "malformed_json"),
    (b'{"type": "demo.add", "args": {"x": NaN, "y": 1}}', 400, "malformed_json"),
    (b'{"type": "demo.add", "args": {"x": 1e999, "y": 1}}', 400, "malformed_json"),
    (b'{"type": "demo.add\\u0000", "args": {}}', 400, "malformed_json"),
    (b'{"type": "demo.add", "args": {"x": 1, "y": 1, "s": "\\ud800"}}', 400, "malformed_json"),
    (b"[" * 100_000 + b"]" * 100_000, 400, "malformed_json"),
    (b'{"a":' * 40 + b"1" + b"}" * 40, 400, "malformed_json"),
    (b"1" * 5000, 400, "malformed_json"),
    (b'{"type": "demo.add", "args": {"x": 1, "y": 1}, "pad": "' + b"x" * (1024 * 1024) + b'"}', 413, "too_large"),
]  # fmt: skip


@pytest.mark.parametrize(("raw", "status", "code"), RAW_BODIES, ids=range(len(RAW_BODIES)))
def test_it_refuses_malformed_bodies_with_a_clear_error(tenant_db, raw, status, code):
    before = _count(tenant_db.acme)
    answer = call("POST", "/jobs", key=tenant_db.acme_key, raw=raw)
    assert (answer.status, answer.error_code) == (status, code), answer.body
    assert _count(tenant_db.acme) == before


def test_every_delay_waits_in_the_table_as_scheduled(tenant_db):
    short = call(
        "POST", "/jobs", key=tenant_db.acme_key,
        body={"type": "demo.add", "args": {"x": 1, "y": 2}, "delay_seconds": 60},
    )  # fmt: skip
    long = call(
        "POST", "/jobs", key=tenant_db.acme_key,
        body={"type": "demo.add", "args": {"x": 1, "y": 2}, "delay_seconds": 3600},
    )  # fmt: skip
    # No broker ETAs: the dispatcher sends a delayed job when it is due.
    assert (short.status, short.body["status"]) == (202, "scheduled")
    assert (long.status, long.body["status"]) == (202, "scheduled")
    with tenant_db.acme:
        assert Job.objects.get(id=long.body["id"]).published_at is None
        assert Job.objects.get(id=short.body["id"]).published_at is None


@pytest.mark.parametrize("path", ["/jobs", "/jobs/batch"])
def test_redis_failing_after_the_commit_still_answers_202_and_the_reconciler_announces_it(
    tenant_db, monkeypatch, caplog, path
):
    # After its commit a submission only tells Redis (billing, the active set, the dispatcher's
    # ready set); if that fails the job is accepted all the same, never a 503 that would make the
    # client submit it twice. Redis is made to fail at that one call.
    import redis.client

    from jobs.services.reconciliation import WorkerView, tenant_reconcile

    real_execute = redis.client.Pipeline.execute
    failing = True

    def execute(self, *args, **kwargs):
        if failing:
            raise redis.ConnectionError("Redis went away (the test's outage)")
        return real_execute(self, *args, **kwargs)

    monkeypatch.setattr(redis.client.Pipeline, "execute", execute)
    before = _count(tenant_db.acme)
    add = {"type": "demo.add", "args": {"x": 1, "y": 2}}
    body = add if path == "/jobs" else {"jobs": [add]}
    with caplog.at_level(logging.WARNING, logger="jobs.services.activity"):
        answer = call("POST", path, key=tenant_db.acme_key, body=body)
    failing = False
    assert answer.status == 202, answer.body
    job = answer.body if path == "/jobs" else answer.body["jobs"][0]
    assert job["status"] == "queued"
    assert "not announced" in caplog.text
    assert _count(tenant_db.acme) == before + 1
    # The row waits; the reconciler's next pass tells the dispatcher about it.
    ready = state_key("fair", "default", "ready")
    state_redis().zrem(ready, tenant_db.acme.pk)
    with tenant_db.acme:
        tenant_reconcile(WorkerView())
    assert state_redis().zscore(ready, tenant_db.acme.pk) is not None


def test_run_at_in_the_future_is_kept(tenant_db):
    when = (timezone.now() + timedelta(days=2)).replace(microsecond=0)
    answer = call(
        "POST", "/jobs", key=tenant_db.acme_key,
        body={"type": "demo.add", "args": {"x": 1, "y": 2}, "run_at": when.isoformat()},
    )  # fmt: skip
    assert answer.status == 202
    assert answer.body["status"] == "scheduled"
    assert answer.body["run_at"].startswith(when.strftime("%Y-%m-%dT%H:%M:%S"))


def test_the_same_idempotency_key_and_body_return_the_original_job(tenant_db):
    body = {"type": "demo.add", "args": {"x": 7, "y": 8}}
    headers = {"Idempotency-Key": "order-42-a"}
    first = call("POST", "/jobs", key=tenant_db.acme_key, body=body, headers=headers)
    before = _count(tenant_db.acme)
    second = call("POST", "/jobs", key=tenant_db.acme_key, body=body, headers=headers)
    assert first.status == second.status == 202
    assert first.body["id"] == second.body["id"]
    assert _count(tenant_db.acme) == before


def test_the_same_idempotency_key_with_another_body_is_a_409(tenant_db):
    headers = {"Idempotency-Key": "order-42-b"}
    call(
        "POST",
        "/jobs",
        key=tenant_db.acme_key,
        body={"type": "demo.add", "args": {"x": 1, "y": 1}},
        headers=headers,
    )
    before = _count(tenant_db.acme)
    answer = call(
        "POST", "/jobs", key=tenant_db.acme_key, body={"type": "demo.add", "args": {"x": 2, "y": 1}}, headers=headers
    )  # fmt: skip
    assert (answer.status, answer.error_code) == (409, "idempotency_conflict")
    assert _count(tenant_db.acme) == before


def test_idempotency_keys_are_per_tenant(tenant_db):
    body = {"type": "demo.add", "args": {"x": 1, "y": 1}}
    headers = {"Idempotency-Key": "shared-name"}
    acme = call("POST", "/jobs", key=tenant_db.acme_key, body=body, headers=headers)
    globex = call("POST", "/jobs", key=tenant_db.globex_key, body=body, headers=headers)
    assert acme.status == globex.status == 202
    assert acme.body["id"] != globex.body["id"]


def test_a_malformed_idempotency_key_is_a_400(tenant_db):
    answer = call(
        "POST", "/jobs", key=tenant_db.acme_key, body={"type": "demo.add", "args": {"x": 1, "y": 1}},
        headers={"Idempotency-Key": "x" * 300},
    )  # fmt: skip
    assert (answer.status, answer.error_code) == (400, "bad_idempotency_key")


# --- Idempotency-Key on a batch ------------------------------------------------------------------

BATCH = {"jobs": [{"type": "demo.add", "args": {"x": n, "y": 1}} for n in range(3)]}


def test_the_same_idempotency_key_and_batch_return_the_original_jobs_in_order(tenant_db):
    headers = {"Idempotency-Key": "nightly-batch-1"}
    first = call("POST", "/jobs/batch", key=tenant_db.acme_key, body=BATCH, headers=headers)
    before = _count(tenant_db.acme)
    second = call("POST", "/jobs/batch", key=tenant_db.acme_key, body=BATCH, headers=headers)
    assert first.status == second.status == 202
    assert [job["id"] for job in second.body["jobs"]] == [job["id"] for job in first.body["jobs"]]
    assert [job["args"]["x"] for job in second.body["jobs"]] == [0, 1, 2]
    assert _count(tenant_db.acme) == before


def test_the_same_idempotency_key_with_another_batch_is_a_409_and_writes_nothing(tenant_db):
    headers = {"Idempotency-Key": "nightly-batch-2"}
    call("POST", "/jobs/batch", key=tenant_db.acme_key, body=BATCH, headers=headers)
    before = _count(tenant_db.acme)
    other = {"jobs": BATCH["jobs"][:2]}
    answer = call("POST", "/jobs/batch", key=tenant_db.acme_key, body=other, headers=headers)
    assert (answer.status, answer.error_code) == (409, "idempotency_conflict")
    assert len(answer.body["error"]["details"]["job_ids"]) == 3
    assert _count(tenant_db.acme) == before


def test_a_batch_without_a_key_is_accepted_each_time(tenant_db):
    before = _count(tenant_db.acme)
    for _ in range(2):
        assert call("POST", "/jobs/batch", key=tenant_db.acme_key, body=BATCH).status == 202
    assert _count(tenant_db.acme) == before + 6


def test_a_malformed_idempotency_key_on_a_batch_is_a_400_and_writes_nothing(tenant_db):
    before = _count(tenant_db.acme)
    answer = call(
        "POST", "/jobs/batch", key=tenant_db.acme_key, body=BATCH, headers={"Idempotency-Key": "é"}
    )
    assert (answer.status, answer.error_code) == (400, "bad_idempotency_key")
    assert _count(tenant_db.acme) == before
