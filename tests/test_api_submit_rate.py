"""POST /api/v1/jobs and /jobs/batch over the tenant's submit rate: 429 with Retry-After, the
error envelope, and nothing written (CONTRACT.md "Limits").

On tenants of this module's own with an operator's override of 2/m and a burst of 2, so the
shared actors are untouched; each test starts with full buckets. A token comes back every 30 s,
so no test depends on how fast the machine answers (at 2/s one came back between two requests
of a slow CI run); the one test that waits for a token sets a fast rate of its own.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pytest
import redis
from django.db import connection
from saas_platform.lib import rate_buckets
from saas_platform.lib.state_redis import state_key, state_redis

from billing.limits import limits_cache_clear
from billing.models import Subscription
from jobs.models import Job
from tests.api_client import Answer, call
from tests.servers import free_port

RATE = "2/m"
BURST = 2


@dataclass
class Limited:
    tenant: Any
    key: str


def _limited_tenant(name: str) -> Limited:
    from billing.services import tenant_create_on_plan
    from tenants.services import apikey_create

    tenant = tenant_create_on_plan(slug=f"sr{uuid.uuid4().hex[:12]}", name=name).tenant
    Subscription.objects.filter(tenant=tenant).update(
        submit_rate_override=RATE, submit_burst_override=BURST
    )
    return Limited(tenant=tenant, key=apikey_create(tenant=tenant, name="rate test").plaintext)


@pytest.fixture(scope="module")
def limited(actors: Any, django_db_blocker: Any) -> Iterator[tuple[Limited, Limited]]:
    """Two tenants at 2/m (dropped with their schemas at the end)."""
    from tenants.models import Tenant

    with django_db_blocker.unblock():
        pair = (_limited_tenant("Hooli"), _limited_tenant("Pied Piper"))
        limits_cache_clear()
    yield pair
    with django_db_blocker.unblock():
        connection.set_schema_to_public()
        for each in pair:
            Tenant.objects.filter(pk=each.tenant.pk).delete()
            with connection.cursor() as cursor:
                cursor.execute(f'DROP SCHEMA IF EXISTS "{each.tenant.schema_name}" CASCADE')
            # Its accepted jobs made it active: a later reconciler must not look for it.
            state_redis().srem(state_key("active-tenants"), each.tenant.pk)
        limits_cache_clear()


@pytest.fixture
def hooli(limited: tuple[Limited, Limited], tenant_db: Any) -> Limited:
    for each in limited:
        # A first request warms this process's caches (host, limits, connections).
        _submit(each)
        state_redis().delete(state_key("submit", each.tenant.pk))  # a full bucket
    return limited[0]


@pytest.fixture
def pied_piper(limited: tuple[Limited, Limited], hooli: Limited) -> Limited:
    return limited[1]


def _add(x: int) -> dict[str, Any]:
    # An hour ahead: the job waits in its table, so no worker of a later test gets a message
    # of a tenant that is gone by then.
    return {"type": "demo.add", "args": {"x": x, "y": 1}, "delay_seconds": 3600}


def _submit(who: Limited, x: int = 1, **kwargs: Any) -> Answer:
    return call("POST", "/jobs", key=who.key, body=_add(x), **kwargs)


def _batch(who: Limited, size: int, **kwargs: Any) -> Answer:
    return call(
        "POST", "/jobs/batch", key=who.key, body={"jobs": [_add(i) for i in range(size)]}, **kwargs
    )


def _jobs(who: Limited) -> int:
    with who.tenant:
        return Job.objects.count()


@contextmanager
def _rate_set(who: Limited, rate: str) -> Iterator[None]:
    """`who` at `rate` (a burst of one second's worth) from a full bucket, then back."""
    Subscription.objects.filter(tenant=who.tenant).update(
        submit_rate_override=rate, submit_burst_override=None
    )
    limits_cache_clear()
    state_redis().delete(state_key("submit", who.tenant.pk))
    try:
        yield
    finally:
        Subscription.objects.filter(tenant=who.tenant).update(
            submit_rate_override=RATE, submit_burst_override=BURST
        )
        limits_cache_clear()


def _retry_after(answer: Answer) -> int:
    value = answer.headers["Retry-After"]
    assert value.isdigit(), value  # an integer number of seconds, as HTTP says
    return int(value)


def _assert_refused(answer: Answer, rate: str = RATE) -> int:
    assert answer.status == 429, answer.body
    assert answer.error_code == "rate_limited"
    assert set(answer.body["error"]) == {"code", "message", "details"}
    seconds = _retry_after(answer)
    assert seconds >= 1
    assert answer.body["error"]["details"]["retry_after"] == seconds
    assert answer.body["error"]["details"]["submit_rate"] == rate
    return seconds


def test_over_the_submit_rate_it_answers_429_with_retry_after_and_writes_nothing(hooli):
    assert [_submit(hooli, x).status for x in range(2)] == [202, 202]  # the burst
    before = _jobs(hooli)
    refused = _submit(hooli, 3)
    # 30 s to the next token, less what the test took, rounded up.
    assert 25 <= _assert_refused(refused) <= 30
    assert _jobs(hooli) == before


def test_after_waiting_retry_after_seconds_the_next_submission_is_accepted(hooli):
    with _rate_set(hooli, "2/s"):
        # Submit until refused: however slowly the machine answers, the bucket is then empty.
        refused = next(
            answer for answer in (_submit(hooli, x) for x in range(50)) if answer.status == 429
        )
        seconds = _assert_refused(refused, "2/s")
        assert seconds == 1  # half a second to the next token, rounded up
        time.sleep(seconds)
        assert _submit(hooli).status == 202


def test_a_batch_larger_than_the_tokens_left_is_refused_whole(hooli):
    assert _submit(hooli).status == 202  # one token left
    before = _jobs(hooli)
    _assert_refused(_batch(hooli, 2))
    assert _jobs(hooli) == before
    # The refused batch took nothing: the token left still admits a batch of one.
    assert _batch(hooli, 1).status == 202


def test_a_batch_larger_than_the_burst_is_accepted_once_the_bucket_is_full_and_waited_out(hooli):
    assert _batch(hooli, 5).status == 202  # 2 tokens for 5 jobs: 3 owed
    before = _jobs(hooli)
    # 4 tokens to refill (the debt and the next one) at 2/m.
    assert 115 <= _assert_refused(_submit(hooli)) <= 120
    assert _jobs(hooli) == before


def test_the_submit_rate_is_per_tenant(hooli, pied_piper):
    for x in range(2):
        _submit(hooli, x)
    _assert_refused(_submit(hooli))
    assert [_submit(pied_piper, x).status for x in range(2)] == [202, 202]


def test_the_shared_actors_are_not_limited_by_these(hooli, tenant_db):
    for x in range(2):
        _submit(hooli, x)
    _assert_refused(_submit(hooli))
    assert call("POST", "/jobs", key=tenant_db.acme_key, body=_add(1)).status == 202


def test_a_replayed_idempotency_key_returns_its_job_even_over_the_rate(hooli):
    first = _submit(hooli, headers={"Idempotency-Key": "replay-me"})
    assert first.status == 202
    _submit(hooli)
    _assert_refused(_submit(hooli, headers={"Idempotency-Key": "a-new-one"}))
    replay = _submit(hooli, headers={"Idempotency-Key": "replay-me"})
    assert (replay.status, replay.body["id"]) == (202, first.body["id"])
    # The same key with another body is still the 409 it was, not a 429.
    assert _submit(hooli, 9, headers={"Idempotency-Key": "replay-me"}).status == 409


def test_a_replayed_batch_returns_its_jobs_even_over_the_rate(hooli):
    first = _batch(hooli, 2, headers={"Idempotency-Key": "batch-replay"})
    assert first.status == 202
    _assert_refused(_batch(hooli, 2, headers={"Idempotency-Key": "another-batch"}))
    # A single job's key of the same name is not the batch's (their keys are apart).
    _assert_refused(_submit(hooli, headers={"Idempotency-Key": "batch-replay"}))
    replay = _batch(hooli, 2, headers={"Idempotency-Key": "batch-replay"})
    assert replay.status == 202
    assert [job["id"] for job in replay.body["jobs"]] == [job["id"] for job in first.body["jobs"]]


def test_with_redis_unreachable_submissions_go_through_with_a_warning(hooli, monkeypatch, caplog):
    # Built like state_redis() (from a URL: no retries with back-off), on a port nobody serves.
    nobody = redis.Redis.from_url(f"redis://127.0.0.1:{free_port()}/0", socket_connect_timeout=1)
    monkeypatch.setattr(rate_buckets, "_script", nobody.register_script(rate_buckets._TAKE))
    before = _jobs(hooli)
    with caplog.at_level(logging.WARNING, logger="jobs.services.admission"):
        assert [_submit(hooli, x).status for x in range(3)] == [202, 202, 202]
        assert _batch(hooli, 5).status == 202
    assert _jobs(hooli) == before + 8
    assert "submit rate of tenant" in caplog.text


def test_a_refused_submission_is_not_counted_as_usage(hooli):
    usage = call("GET", "/usage", key=hooli.key).body["usage"]["jobs"]
    for x in range(2):
        _submit(hooli, x)
    _assert_refused(_submit(hooli))
    _assert_refused(_batch(hooli, 2))
    assert call("GET", "/usage", key=hooli.key).body["usage"]["jobs"] == usage + 2


@pytest.mark.parametrize("path", ["/api/v1/jobs", "/api/v1/jobs/batch"])
def test_the_openapi_document_gives_the_429_its_retry_after_header(tenant_db, path):
    document = call("GET", "/openapi.json", key=None).body
    answer = document["paths"][path]["post"]["responses"]["429"]
    header = answer["headers"]["Retry-After"]
    assert header["required"] is True
    assert header["schema"]["type"] == "integer"
    assert answer["content"]["application/json"]["schema"]["$ref"].endswith("/ErrorOut")


def test_a_workflow_costs_a_token_per_step_and_its_replay_is_never_refused(hooli):
    body = {
        "steps": [
            {"type": "demo.add", "args": {"x": 1, "y": 1}},
            {"type": "demo.add", "args": {"y": 1}},
        ]
    }
    key = {"Idempotency-Key": "workflow-replay"}
    first = call("POST", "/workflows", key=hooli.key, body=body, headers=key)
    assert first.status == 202, first.body
    # Two steps took the burst of 2: the next workflow, or job, waits.
    _assert_refused(call("POST", "/workflows", key=hooli.key, body=body))
    _assert_refused(_submit(hooli))
    replay = call("POST", "/workflows", key=hooli.key, body=body, headers=key)
    assert (replay.status, replay.body["id"]) == (202, first.body["id"])
