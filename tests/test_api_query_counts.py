"""Query counts on the hot paths (zulip-style): a regression here costs every request."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from saas_platform.lib.worker_liveness import WorkerReport, report_publish, worker_forget

from tests.api_client import call
from tests.jobs_helpers import queued_job, run_until_final

ADD = {"type": "demo.add", "args": {"x": 1, "y": 2}}


@pytest.fixture(autouse=True)
def _caches_kept(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Warm stays warm: if 5 s pass between the warm-up and the counted request, the host cache
    expires and the count includes its refill (a full run counted a domain lookup after the fuzz
    module), and billing's limits cache does so after 2 s (CI on a slow machine counted the
    subscription and plan lookups of the waiting reason). Both are emptied first, so the warm-up
    fills them with the long expiry rather than reusing an entry of an earlier test's."""
    from billing import limits
    from tenants import middleware

    monkeypatch.setattr(middleware, "HOST_CACHE_SECONDS", 3600.0)
    monkeypatch.setattr(limits, "LIMITS_CACHE_SECONDS", 3600.0)
    middleware.host_cache_clear()
    limits.limits_cache_clear()
    yield
    # Entries filled here would outlive the patch by an hour: later tests get fresh ones.
    middleware.host_cache_clear()
    limits.limits_cache_clear()


def _queries(**kwargs) -> list[str]:
    with CaptureQueriesContext(connection) as captured:
        answer = call(**kwargs)
    assert answer.status < 300, answer.body
    return [q["sql"] for q in captured.captured_queries]


def test_a_submit_costs_two_queries_once_warm(tenant_db):
    request = {
        "method": "POST",
        "path": "/jobs",
        "key": tenant_db.acme_key,
        "host": "acme.localhost",
        "body": ADD,
    }
    _queries(**request)  # warm: the host cache, the key's last_used_at, the first SET search_path
    sql = _queries(**request)
    # API key, INSERT: no domain lookup, no SET search_path, no BEGIN/COMMIT, and nothing after
    # the commit (the dispatcher sends the job, not the request).
    assert len(sql) == 2, sql
    assert sql[0].startswith("SELECT")
    assert 'FROM "tenants_apikey"' in sql[0]
    assert sql[1].startswith('INSERT INTO "jobs_job"')


@pytest.fixture
def default_consumer() -> Iterator[None]:
    """A live worker's report that it consumes `default`, as a worker's heartbeat writes it (no
    worker process: nothing may take the job while its read is counted)."""
    incarnation = f"counted-{uuid.uuid4().hex[:8]}"
    report_publish(
        WorkerReport(
            incarnation=incarnation, node="counted@host", pid=1, queues=("default",),
            held=frozenset(), at=time.time(), concurrency=1,
        )
    )  # fmt: skip
    yield
    worker_forget(incarnation)


def test_a_waiting_job_read_costs_three_queries_once_warm(tenant_db, default_consumer):
    job_id = call("POST", "/jobs", key=tenant_db.acme_key, host="acme.localhost", body=ADD).body[
        "id"
    ]
    request = {
        "method": "GET",
        "path": f"/jobs/{job_id}",
        "key": tenant_db.acme_key,
        "host": "acme.localhost",
    }
    _queries(**request)
    sql = _queries(**request)
    # API key, the job (with its attempts), and its place in its tenant's line for the waiting
    # reason: the host's tenant comes from the per-process cache, the limits from billing's,
    # and the connection is already on acme's search_path.
    assert len(sql) == 3, sql
    assert '"tenants_apikey"' in sql[0]
    assert sql[1].startswith('SELECT "jobs_job"."id"'), sql
    assert sql[2].startswith("SELECT COUNT(*)"), sql


def test_a_job_read_with_its_attempt_history_costs_no_more(tenant_db):
    job = queued_job(tenant_db.acme, "demo.fail", {"message": "m"}, max_attempts=3)
    run_until_final(tenant_db.acme, job)
    request = {
        "method": "GET",
        "path": f"/jobs/{job.id}",
        "key": tenant_db.acme_key,
        "host": "acme.localhost",
    }
    _queries(**request)
    sql = _queries(**request)
    assert len(sql) == 2, sql  # API key, the job with its three attempts
    assert len(call(**request).body["attempts_log"]) == 3


def test_a_new_domain_is_routed_at_once_in_this_process(tenant_db):
    from tenants.models import Domain

    host = "acme-alias.localhost"
    assert call("GET", "/jobs", key=tenant_db.acme_key, host=host).status == 404
    Domain.objects.create(domain=host, tenant=tenant_db.acme, is_primary=False)
    try:
        assert call("GET", "/jobs", key=tenant_db.acme_key, host=host).status == 200
    finally:
        Domain.objects.filter(domain=host).delete()
    assert call("GET", "/jobs", key=tenant_db.acme_key, host=host).status == 404
