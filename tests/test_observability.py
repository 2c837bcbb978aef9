"""Structured logs and Prometheus metrics from real worker processes.

The workers inherit this test process's PROMETHEUS_MULTIPROC_DIR (the settings create one per
process tree), so the /metrics page served here adds up what their pool children recorded, as
a web process on the worker's host would.
"""

from __future__ import annotations

import json

import pytest
from django.test import Client, override_settings
from prometheus_client.parser import text_string_to_metric_families

from jobs.models import FINAL_STATUSES, Job, JobStatus
from tests.jobs_helpers import submit, wait_final
from tests.workers import WorkerProcess, wait_for

pytestmark = [pytest.mark.worker, pytest.mark.slow]

TOKEN = "operator-metrics-token"


def _metrics(token: str | None = TOKEN) -> tuple[int, str]:
    headers = {"HTTP_AUTHORIZATION": f"Bearer {token}"} if token else {}
    with override_settings(METRICS_TOKEN=TOKEN):
        response = Client(HTTP_HOST="localhost").get("/metrics", **headers)
    return response.status_code, response.content.decode()


def _sample(text: str, name: str, **labels: str) -> float:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return 0.0


def test_the_metrics_page_needs_the_operator_token(tenant_db):
    assert Client(HTTP_HOST="localhost").get("/metrics").status_code == 404  # no token set
    assert _metrics(token=None)[0] == 401
    assert _metrics(token="wrong")[0] == 401
    # Operators only: a tenant host has no such page.
    with override_settings(METRICS_TOKEN=TOKEN):
        tenant_page = Client(HTTP_HOST="acme.localhost").get(
            "/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}"
        )
    assert tenant_page.status_code == 404
    status, text = _metrics()
    assert status == 200
    assert 'jobs_queue_depth{queue="default"}' in text


def test_a_workers_jobs_are_counted_by_status_type_and_plan(tenant_db):
    # The counters are per plan, not per tenant: jobs other tests left waiting for the shared
    # actors would be run by this worker and counted with these.
    for tenant in (tenant_db.acme, tenant_db.globex, tenant_db.initech):
        with tenant:
            Job.objects.exclude(status__in=FINAL_STATUSES).update(status=JobStatus.CANCELLED)
    before = _metrics()[1]
    with WorkerProcess(
        pool="prefork", concurrency=2, expected_errors=[r"raised unexpected: DemoFailure"]
    ):
        jobs = [submit(tenant_db.acme, "demo.add", {"x": n, "y": 1}) for n in range(3)]
        failing = submit(tenant_db.acme, "demo.fail", {"message": "counted"})
        wait_final(tenant_db.acme, [j.id for j in [*jobs, failing]], timeout=90)
    after = _metrics()[1]

    def grew(name: str, **labels: str) -> float:
        return _sample(after, name, **labels) - _sample(before, name, **labels)

    plan = "free"
    assert grew("jobs_ended_total", status="succeeded", type="demo.add", plan=plan) == 3
    assert grew("jobs_ended_total", status="retrying", type="demo.fail", plan=plan) == 2
    assert grew("jobs_ended_total", status="failed", type="demo.fail", plan=plan) == 1
    assert grew("job_run_seconds_count", type="demo.add") == 3
    assert grew("job_queue_seconds_count", type="demo.fail") == 3
    # No tenant label anywhere: cardinality stays that of types and plans.
    assert "tenant=" not in after


def test_a_workers_json_log_lines_carry_tenant_job_and_attempt(tenant_db):
    worker = WorkerProcess(
        pool="prefork",
        concurrency=1,
        env={"LOG_FORMAT": "json"},
        expected_errors=[r"raised unexpected: DemoFailure"],
    )
    with worker:
        job = submit(tenant_db.acme, "demo.fail", {"message": "logged"})
        wait_final(tenant_db.acme, [job.id], timeout=90)
        wait_for(lambda: worker.count("raised unexpected"), what="the final failure's log line")
    records = []
    for line in worker.lines:
        if line.startswith("{"):
            records.append(json.loads(line))
    # Every line the worker wrote is one JSON object (Celery's banner aside, printed to stdout).
    assert records
    assert all({"timestamp", "level", "logger", "message"} <= set(r) for r in records)
    mine = [r for r in records if r.get("job_id") == str(job.id)]
    retries = [r for r in mine if "retry in" in r["message"]]
    assert [(r["tenant"], r["job_type"], r["attempt"]) for r in retries] == [
        ("acme", "demo.fail", 1),
        ("acme", "demo.fail", 2),
    ]
    [final] = [r for r in mine if "raised unexpected" in r["message"]]
    assert (final["attempt"], final["level"]) == (3, "error")
