"""Attempt history written by real worker processes: retries, a user's retry, a killed child."""

from __future__ import annotations

import os
import signal
from datetime import datetime

import pytest

from tests.api_client import call
from tests.jobs_helpers import job_in, submit, wait_final
from tests.test_worker_faults import CHILD_LOST
from tests.workers import WorkerProcess, wait_for

pytestmark = [pytest.mark.worker, pytest.mark.slow]


def _log(key: str, job_id) -> list[dict]:
    answer = call("GET", f"/jobs/{job_id}", key=key)
    assert answer.status == 200
    return answer.body["attempts_log"]


def _summary(log: list[dict]) -> list[tuple[int, str, str]]:
    return [(a["number"], a["cause"], a["outcome"]) for a in log]


def test_a_failed_job_retried_by_its_user_runs_again_and_keeps_its_history(
    tenant_db, prefork_worker
):
    key = tenant_db.acme_key
    prefork_worker.allow(r"raised unexpected: DemoFailure\('nope'\)")  # the job's own failure
    job = call(
        "POST", "/jobs", key=key, body={"type": "demo.fail", "args": {"message": "nope"}}
    ).body
    [failed] = wait_final(tenant_db.acme, [job["id"]])
    assert (failed.status, failed.attempts) == ("failed", failed.max_attempts)
    log = _log(key, job["id"])
    assert _summary(log) == [
        (1, "submitted", "retrying"),
        (2, "retry", "retrying"),
        (3, "retry", "failed"),
    ]
    for attempt in log:
        assert attempt["error"] == "jobs.catalogue.demo_fail.DemoFailure: nope"
        assert "DemoFailure: nope" in attempt["traceback"]
        assert attempt["worker"].startswith("test-prefork-")
        # A retry counts as queued from when its countdown ends, and starts after that.
        queued, started = (datetime.fromisoformat(attempt[k]) for k in ("queued_at", "started_at"))
        assert queued <= started

    assert call("POST", f"/jobs/{job['id']}/retry", key=key).status == 202
    [again] = wait_final(tenant_db.acme, [job["id"]])
    assert (again.status, again.attempts, again.max_attempts) == ("failed", 6, 6)
    body = call("GET", f"/jobs/{job['id']}", key=key).body
    assert body["attempts"] == 6
    assert _summary(body["attempts_log"]) == [
        (1, "submitted", "retrying"),
        (2, "retry", "retrying"),
        (3, "retry", "failed"),
        (4, "user_retry", "retrying"),
        (5, "retry", "retrying"),
        (6, "retry", "failed"),
    ]
    assert all(a["error"] for a in body["attempts_log"])


DOOMED_QUEUE = f"doomed-{os.getpid()}"


@pytest.fixture
def doomed_worker(tenant_db):
    # A worker of this test's own, on a queue of its own (the module's prefork worker must not
    # take the job): its child is killed.
    with WorkerProcess(
        pool="prefork", concurrency=2, queues=DOOMED_QUEUE, name="doomed"
    ) as process:
        yield process


def test_a_killed_pool_child_leaves_its_attempt_lost_and_the_redelivery_runs_it(
    tenant_db, doomed_worker
):
    job = submit(tenant_db.globex, "demo.sleep", {"seconds": 2}, queue=DOOMED_QUEUE)

    def running_pid() -> int | None:
        current = job_in(tenant_db.globex, job.id)
        if current.status == "running" and current.worker:
            return int(current.worker.rsplit(":", 1)[1])
        return None

    doomed_worker.allow(CHILD_LOST)
    os.kill(wait_for(running_pid, what="the job to start running"), signal.SIGKILL)
    [done] = wait_final(tenant_db.globex, [job.id])
    assert done.status == "succeeded"
    log = _log(tenant_db.globex_key, job.id)
    assert _summary(log) == [(1, "submitted", "lost"), (2, "redelivered", "succeeded")]
    assert "worker lost" in log[0]["error"]
    assert log[0]["worker"] != log[1]["worker"]  # another pool child ran it
    assert doomed_worker.alive
