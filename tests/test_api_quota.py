"""The monthly job quota at submission (billing.quotas): over it the API answers 429
`quota_exceeded` with Retry-After = the period's end, and accepts nothing; at 80% the usage
document raises the alarm. On a plan with a quota of 5 and a tenant of this module's own.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest
from django.db import connection

from billing.limits import limits_cache_clear
from billing.models import Plan, Subscription
from billing.usage import period_bounds
from jobs.models import Job
from tests.api_client import call

QUOTA = 5


@dataclass
class Own:
    tenant: Any
    key: str


@pytest.fixture(scope="module")
def own(actors: Any, django_db_blocker: Any) -> Iterator[Own]:
    from billing.services import tenant_create_on_plan
    from tenants.models import Tenant
    from tenants.services import apikey_create

    suffix = uuid.uuid4().hex[:10]
    with django_db_blocker.unblock():
        plan = Plan.objects.create(
            slug=f"q-{suffix}", name="Quota test", monthly_job_quota=QUOTA,
            submit_rate="1000/s", concurrency=2, max_schedules=5, min_interval_seconds=60,
            retention_days=7,
        )  # fmt: skip
        tenant = tenant_create_on_plan(slug=f"q{suffix}", name="Quota", plan_slug=plan.slug).tenant
        key = apikey_create(tenant=tenant, name="quota").plaintext
    yield Own(tenant=tenant, key=key)
    with django_db_blocker.unblock():
        connection.set_schema_to_public()
        Subscription.objects.filter(tenant=tenant).delete()
        Tenant.objects.filter(pk=tenant.pk).delete()
        with connection.cursor() as cursor:
            cursor.execute(f'DROP SCHEMA IF EXISTS "{tenant.schema_name}" CASCADE')
        plan.delete()
        limits_cache_clear()


def _add(n: int) -> dict[str, Any]:
    return {"type": "demo.add", "args": {"x": n, "y": 1}}


def _jobs(own: Own) -> int:
    with own.tenant:
        return Job.objects.count()


def test_over_the_monthly_quota_the_api_answers_429_with_the_period_end_and_accepts_nothing(
    tenant_db, own
):
    for n in range(QUOTA - 1):
        assert call("POST", "/jobs", key=own.key, body=_add(n)).status == 202
    usage = call("GET", "/usage", key=own.key).body
    assert usage["usage"]["jobs"] == QUOTA - 1
    assert usage["quota"] == {
        "jobs_per_month": QUOTA,
        "jobs_used": QUOTA - 1,
        "percent_used": 80.0,
        "alarm_percent": 80,
        "alarm": True,
    }
    # A batch of two with one job left: all or nothing.
    batch = call("POST", "/jobs/batch", key=own.key, body={"jobs": [_add(1), _add(2)]})
    assert batch.status == 429, batch.body
    assert batch.error_code == "quota_exceeded"
    assert _jobs(own) == QUOTA - 1

    last = call("POST", "/jobs", key=own.key, body=_add(99), headers={"Idempotency-Key": "last"})
    assert last.status == 202
    refused = call("POST", "/jobs", key=own.key, body=_add(100))
    assert refused.status == 429, refused.body
    assert refused.error_code == "quota_exceeded"
    assert "monthly quota of 5 jobs" in refused.body["error"]["message"]
    assert "Nothing was accepted" in refused.body["error"]["message"]
    _, end = period_bounds(datetime.now(UTC))
    retry_after = int(refused.headers["Retry-After"])
    assert abs(retry_after - (end - datetime.now(UTC)).total_seconds()) < 5
    assert refused.body["error"]["details"]["period_end"] == end.isoformat()
    assert _jobs(own) == QUOTA

    # A replay stores nothing new: it is answered, not refused.
    replay = call("POST", "/jobs", key=own.key, body=_add(99), headers={"Idempotency-Key": "last"})
    assert replay.status in (200, 202), replay.body
    assert replay.body["id"] == last.body["id"]
    assert _jobs(own) == QUOTA
    # Reading is not submitting: usage and job reads still answer.
    assert call("GET", "/usage", key=own.key).body["quota"]["percent_used"] == 100.0


def test_the_quota_and_the_submit_rate_cost_one_redis_round_trip_and_a_refusal_takes_no_tokens(
    tenant_db, own, monkeypatch
):
    from saas_platform.lib.state_redis import state_redis

    from billing.limits import tenant_limits
    from billing.metering import month_counter
    from billing.quotas import QuotaExceeded
    from jobs.services.admission import submission_admit, submit_bucket

    # The module's tenant may have used its quota already (the test above): count from 0 again.
    state_redis().hdel(*month_counter(tenant_id=own.tenant.pk, day=datetime.now(UTC).date()))
    with own.tenant:
        submission_admit(tenant_id=own.tenant.pk, jobs=1)  # the script loaded into Redis
    client = state_redis()
    sent: list[Any] = []
    original = client.execute_command

    def counting(*args: Any, **options: Any) -> Any:
        sent.append(args[0])
        return original(*args, **options)

    monkeypatch.setattr(client, "execute_command", counting)
    with own.tenant:
        submission_admit(tenant_id=own.tenant.pk, jobs=1)
        assert sent == ["EVALSHA"], sent  # the quota's read and the bucket's take, one script
        bucket = submit_bucket(own.tenant.pk, tenant_limits(own.tenant.pk).submit_rate)
        before = state_redis().hgetall(bucket.key)
        with pytest.raises(QuotaExceeded) as refused:
            submission_admit(tenant_id=own.tenant.pk, jobs=QUOTA + 1)  # more than the quota
    assert refused.value.wanted == QUOTA + 1
    assert refused.value.state.quota == QUOTA
    # Over the quota the bucket gave nothing: its state was not even rewritten.
    assert before
    assert state_redis().hgetall(bucket.key) == before
