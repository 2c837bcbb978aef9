"""Queues stay per job type (the seed's default / heavy_tasks split), with real workers.

demo.primes runs on the `heavy` queue: a worker started with `-Q heavy` serves it and nothing
else, and the dispatcher sends each queue's jobs only as far as that queue's own workers need.
"""

from __future__ import annotations

import pytest

from jobs.selectors import job_waiting_reason
from tests.jobs_helpers import job_in, submit, wait_final
from tests.workers import WorkerProcess

pytestmark = [pytest.mark.worker, pytest.mark.slow]


def test_a_heavy_only_worker_runs_heavy_jobs_and_leaves_the_rest(tenant_db):
    tenant = tenant_db.initech
    with WorkerProcess(pool="prefork", concurrency=1, queues="heavy", name="heavy-only"):
        heavy = submit(tenant, "demo.primes", {"below": 10_000})
        quick = submit(tenant, "demo.add", {"x": 1, "y": 1})
        [done] = wait_final(tenant, [heavy.id])
        assert (done.status, done.queue, done.result) == (
            "succeeded",
            "heavy",
            {"below": 10_000, "primes": 1229},
        )
        assert done.worker.startswith("heavy-only-")
        # No worker serves `default` here: the quick job waits in the table, not in Redis.
        waiting = job_in(tenant, quick.id)
        assert (waiting.status, waiting.published_at) == ("queued", None)
        with tenant:
            reason = job_waiting_reason(job=waiting)
        assert reason is not None
        assert reason.code == "queued"
        assert reason.details["workers"] == 0  # and it says why: nothing consumes `default`
        assert "No worker consumes the default queue" in reason.message
    with WorkerProcess(pool="prefork", concurrency=1, queues="default", name="default-only"):
        [ran] = wait_final(tenant, [quick.id])
    assert (ran.status, ran.queue) == ("succeeded", "default")
    assert ran.worker.startswith("default-only-")


def test_a_worker_started_without_queues_serves_both(tenant_db):
    tenant = tenant_db.initech
    with WorkerProcess(pool="prefork", concurrency=1, queues="", name="every-queue"):
        jobs = [
            submit(tenant, "demo.primes", {"below": 100}),
            submit(tenant, "demo.add", {"x": 2, "y": 2}),
        ]
        done = wait_final(tenant, [job.id for job in jobs])
    assert {job.status for job in done} == {"succeeded"}
    assert all(job.worker.startswith("every-queue-") for job in done)
