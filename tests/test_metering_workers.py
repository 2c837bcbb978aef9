"""Metering with real worker processes: N jobs run across several workers are counted exactly N
(jobs at submission, attempts where they end), with roll-ups running all the while and one
stopped half-way and run again, and when a worker dies mid-job (its lost attempt is not billed:
it never ended; the attempt that finished the job is).

On a tenant of this module's own, so today's counters hold only these jobs.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from django.db import connection
from django.utils import timezone

from billing.metering import usage_between
from billing.models import Subscription, UsageDay
from billing.rollup import usage_rollup
from jobs.models import FINAL_STATUSES, Job
from jobs.selectors import job_attempts
from tests.jobs_helpers import submit, wait_final
from tests.workers import WorkerProcess, wait_for

pytestmark = [pytest.mark.worker, pytest.mark.slow]

FAST = {"WORKER_HEARTBEAT_SECONDS": "1", "JOBS_RECONCILE_SECONDS": "1"}
QUEUE = f"metering-{os.getpid()}"


@pytest.fixture
def metered(actors: Any, django_db_blocker: Any) -> Iterator[Any]:
    from billing.services import tenant_create_on_plan
    from tenants.models import Tenant

    suffix = uuid.uuid4().hex[:10]
    with django_db_blocker.unblock():
        connection.set_schema_to_public()
        tenant = tenant_create_on_plan(slug=f"m{suffix}", name="Metered", plan_slug="pro").tenant
        Subscription.objects.filter(tenant=tenant).update(
            submit_rate_override="100000/s", concurrency_override=100
        )
        yield tenant
        connection.set_schema_to_public()
        Tenant.objects.filter(pk=tenant.pk).delete()
        with connection.cursor() as cursor:
            cursor.execute(f'DROP SCHEMA IF EXISTS "{tenant.schema_name}" CASCADE')


def _worker(name: str, **options: Any) -> WorkerProcess:
    return WorkerProcess(
        pool="prefork", concurrency=2, queues=QUEUE, env=FAST, name=name, **options
    )


def _today(tenant: Any) -> tuple[int, int]:
    day = timezone.now().date()
    totals = usage_between(tenant_id=tenant.pk, start=day, end=day + timedelta(days=1))
    return totals.jobs, totals.attempts


def _rolled_up(tenant: Any) -> tuple[int, int]:
    row = UsageDay.objects.get(tenant=tenant, day=timezone.now().date())
    return row.jobs, row.attempts


def _finished(tenant: Any, ids: list[Any]) -> int:
    with tenant:
        return Job.objects.filter(id__in=ids, status__in=FINAL_STATUSES).count()


def test_n_jobs_over_three_workers_are_counted_n_with_rollups_running_and_one_stopped(metered):
    n = 150
    with _worker("meter-a"), _worker("meter-b"), _worker("meter-c"):
        ids = [submit(metered, "demo.add", {"x": i, "y": 1}, queue=QUEUE).id for i in range(n)]
        # Roll-ups while the workers count: each copies a moment's totals, never a sum.
        while _finished(metered, ids) < n:
            usage_rollup(batch_size=3)
            time.sleep(0.1)
        done = wait_final(metered, ids)
    assert {job.status for job in done} == {"succeeded"}
    assert _today(metered) == (n, n)

    class Stop(Exception):
        pass

    def stop(number: int) -> None:
        raise Stop

    with pytest.raises(Stop):
        usage_rollup(batch_size=1, after_batch=stop)
    usage_rollup()
    usage_rollup()
    assert _rolled_up(metered) == (n, n)


def test_a_worker_killed_mid_job_leaves_every_job_counted_once(metered):
    n = 40
    with _worker("meter-steady"), _worker("meter-doomed") as doomed:
        ids = [submit(metered, "demo.sleep", {"seconds": 0.4}, queue=QUEUE).id for _ in range(n)]

        def doomed_is_running() -> bool:
            with metered:
                running = Job.objects.filter(id__in=ids, status="running")
                return any(doomed.ran(job.worker) for job in running)

        wait_for(lambda: _finished(metered, ids) >= 5 and doomed_is_running(), timeout=60,
                 what="the doomed worker to be running a job")  # fmt: skip
        doomed.kill_everything()
        with _worker("meter-fresh"):
            done = wait_final(metered, ids, timeout=120)
    assert {job.status for job in done} == {"succeeded"}
    lost = 0
    for job_id in ids:
        with metered:
            outcomes = [a.outcome for a in job_attempts(job_id=job_id)]
        assert outcomes.count("succeeded") == 1, outcomes
        lost += outcomes.count("lost")
    assert lost >= 1, "no attempt was lost: the kill proved nothing"
    # Billed: every job once, every attempt that ended once; the lost ones not at all.
    assert _today(metered) == (n, n)
    usage_rollup()
    assert _rolled_up(metered) == (n, n)
