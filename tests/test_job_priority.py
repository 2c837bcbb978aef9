"""A job's priority (0 lowest .. 9 highest) orders the queue: a later urgent job runs first."""

from __future__ import annotations

import pytest

from tests.jobs_helpers import submit, wait_final
from tests.workers import WorkerProcess

pytestmark = [pytest.mark.worker, pytest.mark.slow]


def test_a_high_priority_job_overtakes_waiting_low_priority_ones(tenant_db):
    # Queued while no worker runs, so all of them wait in the broker together.
    low = [submit(tenant_db.acme, "demo.add", {"x": n, "y": 0}, priority=0) for n in range(5)]
    high = submit(tenant_db.acme, "demo.add", {"x": 99, "y": 0}, priority=9)
    with WorkerProcess(pool="prefork", concurrency=1):
        done = {job.id: job for job in wait_final(tenant_db.acme, [high.id, *(j.id for j in low)])}
    assert all(job.status == "succeeded" for job in done.values())
    first_low = min(done[job.id].started_at for job in low)
    assert done[high.id].started_at < first_low
