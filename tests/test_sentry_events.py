"""Sentry alerts as an on-call engineer wants them, from the real SDK in a real worker process.

A local server stands in for Sentry (tests/sentry_sink.py): the worker's DSN points there, so
the envelopes read here are the bytes that would have left the process.
"""

from __future__ import annotations

import json
import time
import uuid

import pytest

from tests.http_server import LocalServer
from tests.jobs_helpers import submit, wait_final
from tests.sentry_sink import SentrySink
from tests.workers import WorkerProcess, wait_for

pytestmark = [pytest.mark.worker, pytest.mark.slow]

# Celery's own record of a task that raised: expected, it is what these jobs do.
RAISED = r"raised unexpected: (DemoFailure|PermanentJobError|HTTPStatus)"
# After the failure, how long the sink must stay quiet for "exactly one event" to mean anything:
# the SDK's transport sends within milliseconds, and retries were seconds apart.
QUIET_SECONDS = 4


def _worker(sink: SentrySink) -> WorkerProcess:
    return WorkerProcess(
        pool="prefork",
        concurrency=1,
        env={
            "SENTRY_DSN": sink.dsn,
            "SENTRY_ENVIRONMENT": "ci",
            "SENTRY_RELEASE": "jobs@test",
            "OUTBOUND_HTTP_ALLOW_PRIVATE": "true",
        },
        expected_errors=[RAISED],
    )


def _without_exception_messages(event: dict) -> str:
    """The event as JSON, less the exceptions' messages (the job's own error text)."""
    copy = json.loads(json.dumps(event))
    for value in copy.get("exception", {}).get("values", []):
        value.pop("value", None)
    return json.dumps(copy)


def test_a_job_failing_for_good_is_one_event_tagged_with_its_tenant_and_type(tenant_db):
    secret = f"secret-{uuid.uuid4().hex}"
    with SentrySink() as sink, _worker(sink):
        job = submit(tenant_db.acme, "demo.fail", {"message": secret})
        [done] = wait_final(tenant_db.acme, [job.id], timeout=90)
        assert (done.status, done.attempts) == ("failed", 3)
        wait_for(sink.events, timeout=20, what="an event at the sink")
        time.sleep(QUIET_SECONDS)
        events = sink.events()
        raw = sink.raw_bytes()

    # Exactly once, after its retries: the two retried attempts sent nothing.
    assert len(events) == 1, [e.get("tags") for e in events]
    [event] = events
    tags = event["tags"]
    assert tags["tenant"] == "acme"
    assert tags["job_type"] == "demo.fail"
    assert tags["job_id"] == str(job.id)
    assert tags["attempt"] == "3"
    assert (event["environment"], event["release"]) == ("ci", "jobs@test")
    # Reported by our task_failure hook, not by the SDK's Celery integration, and the worker runs
    # without Django's either: their per-task cost (saas_platform.observability.sentry).
    assert event["exception"]["values"][0]["mechanism"]["type"] == "celery"
    assert not {"celery", "django"} & set(event["sdk"]["integrations"])
    # One issue per tenant and job type, however many jobs fail.
    assert event["fingerprint"] == ["job-failed", "acme", "demo.fail"]
    # The retries are breadcrumbs of the event that counts.
    crumbs = [
        c["message"] for c in event["breadcrumbs"]["values"] if c.get("category") == "job.attempt"
    ]
    assert [c.split(":")[0] for c in crumbs] == ["attempt 1 (submitted)", "attempt 2 (retry)"]
    assert all("retrying" in c for c in crumbs)

    # The arguments are nowhere but in the job's own error text: not in a frame's variables
    # (the runner's `claimed`, the job's `args`), not in the breadcrumbs' copies of earlier errors.
    [exception] = event["exception"]["values"]
    assert exception["value"] == secret
    assert secret not in _without_exception_messages(event)
    assert raw.count(secret.encode()) == 1
    frames = exception["stacktrace"]["frames"]
    runner_vars = next(f["vars"] for f in frames if f.get("function") == "job_run_attempt")
    assert runner_vars["claimed"] == "[Filtered]"
    assert tenant_db.acme_key.encode() not in raw


def test_api_keys_and_arguments_of_a_failed_request_never_reach_sentry(tenant_db):
    body = f"body-{uuid.uuid4().hex}"
    with LocalServer() as target, SentrySink() as sink, _worker(sink):
        job = submit(
            tenant_db.globex,
            "http.request",
            {
                "method": "POST",
                "url": target.url("/status/400"),
                "headers": {
                    "Authorization": f"Bearer {tenant_db.globex_key}",
                    "X-Api-Key": tenant_db.acme_key,
                },
                "body": body,
            },
        )
        [done] = wait_final(tenant_db.globex, [job.id], timeout=60)
        assert done.status == "failed"
        # The request went out with both: what must not travel on to Sentry.
        [seen] = target.requests
        assert seen["headers"]["authorization"] == f"Bearer {tenant_db.globex_key}"
        assert seen["body"] == body
        wait_for(sink.events, timeout=20, what="an event at the sink")
        time.sleep(QUIET_SECONDS)
        events = sink.events()
        raw = sink.raw_bytes()

    assert len(events) == 1
    assert events[0]["fingerprint"] == ["job-failed", "globex", "http.request"]
    assert events[0]["tags"]["tenant"] == "globex"
    for secret in (tenant_db.globex_key, tenant_db.acme_key, body):
        assert secret.encode() not in raw, secret
