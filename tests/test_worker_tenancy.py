"""The tenant reaches the worker: real worker processes, prefork and threads (not eager mode)."""

from __future__ import annotations

import itertools
import uuid

import pytest
from django.core.cache import cache
from saas_platform.celery_app import app

from tests.jobs_helpers import submit, wait_final
from tests.schemas import schemas_holding
from tests.workers import WorkerProcess, wait_for

pytestmark = [pytest.mark.worker, pytest.mark.slow]


def _ran_on(worker: WorkerProcess, job) -> bool:
    """The job ran on this worker, in its pool: a prefork child, or the threads pool's process."""
    if not worker.ran(job.worker):
        return False
    pid = int(job.worker.rsplit(":", 1)[1])
    return pid == worker.pid if worker.pool == "threads" else pid != worker.pid


def _run_interleaved(actors, count: int, worker: WorkerProcess) -> None:
    tenants = [actors.acme, actors.globex, actors.initech]
    submitted: dict[str, list] = {t.schema_name: [] for t in tenants}
    for n, tenant in zip(range(count), itertools.cycle(tenants), strict=False):
        job = submit(tenant, "demo.add", {"x": n, "y": 1}, queue=worker.queues)
        submitted[tenant.schema_name].append((job.id, n + 1))
    for tenant in tenants:
        expected = dict(submitted[tenant.schema_name])
        jobs = wait_final(tenant, expected, timeout=120)
        elsewhere = [job.worker for job in jobs if not _ran_on(worker, job)]
        assert elsewhere == [], (
            f"{len(elsewhere)} of {len(jobs)} jobs ran outside {worker.nodename}'s {worker.pool} pool",
            elsewhere[:5],
        )
        for job in jobs:
            assert job.status == "succeeded", (job.id, job.error)
            assert job.result == expected[job.id]
            # The database itself saw this tenant's schema while the job ran.
            assert job.ran_in_schema == tenant.schema_name
        job_rows = schemas_holding("jobs_job", "id", expected)
        result_rows = schemas_holding("django_celery_results_taskresult", "task_id", expected)
        strays = {
            str(i): (job_rows[str(i)], result_rows[str(i)])
            for i in expected
            if job_rows[str(i)] != {tenant.schema_name}
            or result_rows[str(i)] != {tenant.schema_name}
        }
        assert strays == {}


def test_a_job_runs_in_its_tenants_schema_and_its_rows_stay_there(tenant_db, prefork_worker):
    job = submit(tenant_db.acme, "demo.add", {"x": 2, "y": 3})
    [done] = wait_final(tenant_db.acme, [job.id])
    assert (done.status, done.result, done.ran_in_schema) == ("succeeded", 5, "acme")
    assert schemas_holding("jobs_job", "id", [job.id])[str(job.id)] == {"acme"}
    assert schemas_holding("django_celery_results_taskresult", "task_id", [job.id])[
        str(job.id)
    ] == {"acme"}


def test_300_interleaved_jobs_from_3_tenants_on_prefork_have_no_strays(tenant_db, prefork_worker):
    _run_interleaved(tenant_db, 300, prefork_worker)


def test_300_interleaved_jobs_from_3_tenants_on_threads_have_no_strays(tenant_db, thread_worker):
    _run_interleaved(tenant_db, 300, thread_worker)


def test_a_platform_task_right_after_a_tenant_task_sees_public(tenant_db, prefork_worker):
    key = f"probe-{uuid.uuid4()}"
    # Same worker, back to back: the tenant task first, then the platform task.
    job = submit(tenant_db.acme, "demo.add", {"x": 1, "y": 1})
    app.send_task("platform.schema_probe", args=[key], queue="default")
    wait_final(tenant_db.acme, [job.id])
    seen = wait_for(lambda: cache.get(key), what="the probe's answer")
    assert seen == {"current_schema": "public", "tenant": None}


def test_the_tenant_header_cannot_be_forged_by_the_caller(tenant_db, prefork_worker):
    """Published from public with a forged header, a task still runs in public."""
    key = f"probe-{uuid.uuid4()}"
    app.send_task(
        "platform.schema_probe",
        args=[key],
        queue="default",
        headers={"tenant_id": tenant_db.acme.pk, "tenant_schema": "acme"},
    )
    seen = wait_for(lambda: cache.get(key), what="the probe's answer")
    assert seen == {"current_schema": "public", "tenant": None}
