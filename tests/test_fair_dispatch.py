"""Per-tenant rate limits, concurrency caps and fair dispatch, with real worker processes.

Each test gets tenants of its own (so plans and overrides can be set freely) and a broker queue
of its own (tests.jobs_helpers.submit(queue=), WorkerProcess(queues=)), so nothing else in the
suite takes its jobs and its workers take nothing else.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator

import pytest
from django.db import connection

from billing.limits import limits_cache_clear
from billing.models import RateOverride, Subscription
from billing.services import tenant_create_on_plan
from jobs.models import Job, JobStatus
from tests.jobs_helpers import job_in, wait_final
from tests.workers import WorkerProcess, wait_for

pytestmark = [pytest.mark.worker, pytest.mark.slow]

FAST = {"WORKER_HEARTBEAT_SECONDS": "1", "JOBS_RECONCILE_SECONDS": "1"}


@pytest.fixture
def queue() -> str:
    return f"fair-{os.getpid()}-{uuid.uuid4().hex[:6]}"


@pytest.fixture
def make_tenant(tenant_db) -> Iterator[object]:
    made = []

    def make(*, rate: str = "100000/s", burst: int = 100_000, concurrency=100_000, weight=None):
        slug = f"fd{uuid.uuid4().hex[:10]}"
        tenant = tenant_create_on_plan(slug=slug, name=slug, plan_slug="free").tenant
        Subscription.objects.filter(tenant=tenant).update(
            concurrency_override=concurrency, fairness_weight_override=weight
        )
        RateOverride.objects.create(tenant=tenant, job_type="", rate=rate, burst=burst)
        limits_cache_clear()
        made.append(tenant)
        return tenant

    yield make
    for tenant in made:
        with tenant:
            Job.objects.exclude(status__in=["succeeded", "failed", "cancelled"]).update(
                status=JobStatus.CANCELLED
            )
    connection.set_schema_to_public()


def _submit_many(tenant, queue: str, count: int, **args) -> list[Job]:
    from django.db import transaction

    from jobs.services.submission import JobRequest, job_submit_many

    jobs: list[Job] = []
    with tenant:
        for start in range(0, count, 1000):
            with transaction.atomic():
                batch = job_submit_many(
                    requests=[
                        JobRequest(type="demo.add", args={"x": n, "y": 1, **args})
                        for n in range(start, min(count, start + 1000))
                    ],
                    submitted_by="operator",
                )
                # This test's own queue (see the module docstring), before the commit announces it.
                Job.objects.filter(id__in=[job.id for job in batch]).update(queue=queue)
                for job in batch:
                    job.queue = queue
            jobs += batch
    return jobs


def _finished_times(tenant, jobs: list[Job]) -> list[float]:
    with tenant:
        rows = Job.objects.filter(id__in=[job.id for job in jobs], status=JobStatus.SUCCEEDED)
        return sorted(row.finished_at.timestamp() for row in rows)


def test_a_tenants_rate_holds_across_workers_and_follows_an_operators_change(make_tenant, queue):
    # 5/s with a burst of 5, on two workers of two processes each: far more capacity than that.
    tenant = make_tenant(rate="5/s", burst=5)
    with (
        WorkerProcess(pool="prefork", concurrency=2, queues=queue, name="rate-a", env=FAST),
        WorkerProcess(pool="prefork", concurrency=2, queues=queue, name="rate-b", env=FAST),
    ):
        jobs = _submit_many(tenant, queue, 150)
        began = time.time()
        time.sleep(22)
        done = _finished_times(tenant, jobs)
        window = [t for t in done if began + 2 <= t < began + 22]  # after the burst: 20 s
        print(f"5/s limit: {len(window) / 20:.2f}/s over 20 s, {len(done)} done")
        assert len(window) <= 5 * 20 * 1.10
        assert len(window) >= 5 * 20 * 0.80  # the limit, not something slower, is what binds
        # An operator halves it at runtime; it takes effect within the limits cache (2 s).
        RateOverride.objects.filter(tenant=tenant).update(rate="2/s", burst=2)
        changed = time.time()
        time.sleep(14)
        done = _finished_times(tenant, jobs)
        after = [t for t in done if changed + 4 <= t < changed + 14]
        print(f"after the change to 2/s: {len(after) / 10:.2f}/s over 10 s")
        assert len(after) <= 2 * 10 * 1.10 + 1
        RateOverride.objects.filter(tenant=tenant).update(rate="1000/s", burst=1000)
        finished = wait_final(tenant, [job.id for job in jobs], timeout=120)
    assert {job.status for job in finished} == {"succeeded"}
    # Held back, never failed, never charged: every job ran once.
    assert {job.attempts for job in finished} == {1}


def test_a_newcomers_job_starts_within_two_seconds_of_a_flood(make_tenant, queue):
    flooder = make_tenant()
    newcomer = make_tenant()
    with WorkerProcess(pool="prefork", concurrency=2, queues=queue, name="flood", env=FAST):
        _submit_many(flooder, queue, 5000)
        # Let the flood get going: the broker queue is as full as the dispatcher keeps it.
        time.sleep(3)
        with flooder:
            waiting = Job.objects.filter(status=JobStatus.QUEUED, published_at__isnull=True)
            assert waiting.count() > 3000
        [job] = _submit_many(newcomer, queue, 1)
        [done] = wait_final(newcomer, [job.id], timeout=30)
    delay = (done.started_at - done.created_at).total_seconds()
    print(f"newcomer's job started {delay:.2f}s after submission, 3000+ of a flood waiting")
    assert done.status == "succeeded"
    assert delay < 2


def test_backlogged_tenants_are_served_in_proportion_to_their_weights(make_tenant, queue):
    light = make_tenant(weight=1.0)
    heavy = make_tenant(weight=3.0)
    with WorkerProcess(pool="prefork", concurrency=2, queues=queue, name="weights", env=FAST):
        # Both backlogged from the start, with jobs of the same length.
        light_jobs = _submit_many(light, queue, 2000, sleep_ms=5)
        heavy_jobs = _submit_many(heavy, queue, 2000, sleep_ms=5)
        began = time.time()
        time.sleep(15)
        light_times = _finished_times(light, light_jobs)
        heavy_times = _finished_times(heavy, heavy_jobs)
    # Counted while both were backlogged: from 3 s in until either had no job left (on a fast
    # day the heavy tenant's 2,000 ran out within the 15 s, and the light one had the rest).
    start, end = began + 3, began + 15
    for times, jobs in ((light_times, light_jobs), (heavy_times, heavy_jobs)):
        if len(times) == len(jobs):
            end = min(end, times[-1])
    light_done = [t for t in light_times if start <= t < end]
    heavy_done = [t for t in heavy_times if start <= t < end]
    ratio = len(heavy_done) / max(1, len(light_done))
    print(
        f"weights 1:3 served {len(light_done)}:{len(heavy_done)} (1:{ratio:.2f}) "
        f"over {end - start:.1f} s"
    )
    assert end - start >= 3, "too short a window with both tenants backlogged"
    assert len(light_done) > 50  # backlogged all along: a real sample, and no starvation
    assert 3 * 0.9 <= ratio <= 3 * 1.1


def test_a_capped_tenants_next_job_starts_when_a_slot_frees_even_if_its_worker_was_killed(
    make_tenant, queue
):
    from jobs.selectors import job_waiting_reason

    tenant = make_tenant(concurrency=1)
    first, second = (_submit_many(tenant, queue, 1, sleep_ms=60_000)[0] for _ in range(2))
    with WorkerProcess(
        pool="prefork", concurrency=2, queues=queue, name="cap-doomed", env=FAST
    ) as doomed:
        wait_for(lambda: job_in(tenant, first.id).status == "running", what="the first job")
        time.sleep(3)
        # One slot: the second waits although the worker has a free process, and says why.
        held = job_in(tenant, second.id)
        assert (held.status, held.published_at, held.attempts) == ("queued", None, 0)
        with tenant:
            reason = job_waiting_reason(job=held)
        assert reason is not None
        assert reason.code == "concurrency_cap"
        assert reason.details["limit"] == 1
        doomed.kill_everything()
    killed_at = time.time()
    with tenant:
        # Quick from now on, so the test need not wait out the minute.
        Job.objects.filter(id__in=[first.id, second.id]).update(args={"x": 1, "y": 1})
    with WorkerProcess(pool="prefork", concurrency=2, queues=queue, name="cap-rescuer", env=FAST):
        rescued, done = wait_final(tenant, [first.id, second.id], timeout=120)
    rescued, done = sorted([rescued, done], key=lambda job: job.created_at)
    print(f"capped job started {done.started_at.timestamp() - killed_at:.1f}s after the kill")
    assert (rescued.status, done.status) == ("succeeded", "succeeded")
    assert rescued.attempts == 2  # the killed attempt, then the rescued one
    assert done.attempts == 1
    # One slot all along: the second started only once the rescued first had ended.
    assert done.started_at >= rescued.finished_at
