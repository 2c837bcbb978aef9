"""The jobs of a worker that died whole are running again on another worker (CONTRACT.md:
within 2 minutes; here with a 1 s heartbeat and a 1 s reconcile, within seconds)."""

from __future__ import annotations

import pytest

from tests.jobs_helpers import job_in, submit, wait_final
from tests.workers import WorkerProcess, wait_for

pytestmark = [pytest.mark.worker, pytest.mark.slow]

FAST = {"WORKER_HEARTBEAT_SECONDS": "1", "JOBS_RECONCILE_SECONDS": "1"}


def test_a_dead_workers_running_job_is_requeued_and_finishes_elsewhere(tenant_db):
    with WorkerProcess(pool="prefork", concurrency=1, env=FAST, name="doomed") as doomed:
        job = submit(tenant_db.acme, "demo.sleep", {"seconds": 3})
        wait_for(
            lambda: job_in(tenant_db.acme, job.id).status == "running", what="the job to start"
        )
        first_worker = job_in(tenant_db.acme, job.id).worker
        assert first_worker.startswith("doomed-")
        doomed.kill_everything()
    with WorkerProcess(pool="prefork", concurrency=1, env=FAST, beat=True, name="rescuer"):
        [done] = wait_final(tenant_db.acme, [job.id], timeout=90)
    assert done.status == "succeeded"
    assert done.worker.startswith("rescuer-")
    assert done.attempts == 2
    # Either its own message, put back by the reconciler, or the requeue under a new task id ran
    # it: exactly one more attempt.
