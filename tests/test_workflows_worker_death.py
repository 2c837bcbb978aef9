"""A worker killed (SIGKILL, the whole process group) right after a workflow's first step
finished: the workflow still completes, and no step runs twice in effect. The next step's job
committed with the first step's success, so there is no moment where one is recorded and the
other is not; what the dead worker held is rescued like any job's."""

from __future__ import annotations

import time
from typing import Any

import pytest

from jobs.models import Job
from jobs.selectors import job_attempts, workflow_get_with_steps
from tests.api_client import call
from tests.workers import WorkerProcess, unacked_in_broker, wait_for

pytestmark = [pytest.mark.worker, pytest.mark.slow]

FAST = {"WORKER_HEARTBEAT_SECONDS": "1", "JOBS_RECONCILE_SECONDS": "1"}
# CONTRACT.md "Guarantees": the jobs of a worker that died are running again within 2 minutes.
CONTRACT_SECONDS = 120


def _jobs(tenant: Any, workflow_id: str) -> dict[int, Job]:
    with tenant:
        return {job.position: job for job in Job.objects.filter(workflow_id=workflow_id)}


def test_a_worker_killed_right_after_step_one_loses_nothing(tenant_db):
    steps = [
        {"type": "demo.add", "args": {"x": 1, "y": 2}},
        # Long enough to be taken (or running) on the doomed worker when it dies.
        {"type": "demo.add", "args": {"y": 3, "sleep_ms": 2000}},
        {"type": "demo.add", "args": {"y": 4}},
    ]
    with WorkerProcess(pool="prefork", concurrency=1, env=FAST, name="wf-doomed") as doomed:
        created = call("POST", "/workflows", key=tenant_db.acme_key, body={"steps": steps})
        assert created.status == 202, created.body
        workflow_id = created.body["id"]

        def step_one_done() -> dict[int, Job] | None:
            jobs = _jobs(tenant_db.acme, workflow_id)
            return jobs if jobs[1].status == "succeeded" else None

        at_kill = wait_for(step_one_done, timeout=60, what="step one to succeed")
        doomed.kill_everything()
        killed_at = time.time()
    # Its success and the next step's job committed together.
    assert 2 in at_kill, "step one succeeded without its next step"
    second_at_kill = at_kill[2].status
    with WorkerProcess(pool="prefork", concurrency=1, env=FAST, name="wf-rescuer"):

        def ended() -> Any:
            with tenant_db.acme:
                detail = workflow_get_with_steps(workflow_id=workflow_id)
            return detail if detail is not None and detail.status != "running" else None

        detail = wait_for(ended, timeout=CONTRACT_SECONDS, what="the workflow to end")
        left_behind = unacked_in_broker(doomed.incarnation)
    print(
        f"step two was {second_at_kill} at the kill; the workflow ended "
        f"{time.time() - killed_at:.1f}s after it"
    )
    assert detail.status == "succeeded"
    assert left_behind == set(), "the dead worker's messages wait for the visibility timeout"
    jobs = _jobs(tenant_db.acme, workflow_id)
    assert sorted(jobs) == [1, 2, 3]  # one job per step, none made twice
    assert [jobs[n].result for n in (1, 2, 3)] == [3, 6, 10]
    for position, job in jobs.items():
        with tenant_db.acme:
            outcomes = [a.outcome for a in job_attempts(job_id=job.id)]
        # At most the kill cost an attempt: exactly one succeeded per step.
        assert outcomes.count("succeeded") == 1, (position, outcomes)
        assert set(outcomes) <= {"succeeded", "lost"}, (position, outcomes)
