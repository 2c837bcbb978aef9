"""Hard time limits on a threads worker, and the reconciler beside them.

Celery's thread pool ignores time limits; the runner enforces them itself (jobs.time_limits):
a job over its limit fails at once, for good, and no reconciler pass brings it back. A job the
limit cannot interrupt (blocked in one long socket read, which the exception waits for) runs past
its limit on a worker that still holds it: the reconciler must leave it alone, never starting a
second copy of a job that is still running (jobs.services.reconciliation, step 3).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import pytest
from saas_platform.lib.state_redis import state_key, state_redis

from jobs.selectors import job_attempts
from tests.conftest import Actors
from tests.http_server import LocalServer
from tests.jobs_helpers import job_in, submit, wait_final
from tests.workers import WorkerProcess, wait_for

pytestmark = [pytest.mark.worker, pytest.mark.slow]

QUEUE = f"limits-{os.getpid()}"


@pytest.fixture(scope="module")
def threads_worker(actors: Actors) -> Iterator[WorkerProcess]:
    # Reconcile passes every second, so that "nothing requeued it" covers many passes.
    env = {
        "WORKER_HEARTBEAT_SECONDS": "1",
        "JOBS_RECONCILE_SECONDS": "1",
        "OUTBOUND_HTTP_ALLOW_PRIVATE": "true",
    }
    with WorkerProcess(pool="threads", concurrency=4, queues=QUEUE, env=env, name="limits") as w:
        yield w


def _time_limit_error(task_name: str, task_id: object) -> str:
    # Celery logs the job's exception as the task's failure, with its traceback.
    return rf"{task_name}\[{task_id}\] raised unexpected: JobTimeLimitExceeded"


def _last_pass() -> float:
    raw = state_redis().get(state_key("reconcile", "last-pass"))
    return float(raw) if raw is not None else 0.0


def test_a_job_over_its_time_limit_on_threads_fails_at_once_and_is_never_requeued(
    tenant_db: Actors, threads_worker: WorkerProcess
) -> None:
    job = submit(tenant_db.acme, "demo.sleep", {"seconds": 80}, queue=QUEUE, time_limit_seconds=2)
    threads_worker.allow(_time_limit_error("demo.sleep", job.task_id))
    submitted = time.monotonic()
    [done] = wait_final(tenant_db.acme, [job.id], timeout=15)
    print(f"a 2 s limit on an 80 s job: failed {time.monotonic() - submitted:.1f}s after submit")
    assert (done.status, done.error, done.attempts) == ("failed", "time limit of 2 s exceeded", 1)
    ended_at = time.time()
    # Ten passes later it is still failed, with its one attempt: nothing requeued or reran it.
    time.sleep(10)
    assert _last_pass() > ended_at + 5, "no reconcile pass ran meanwhile: the test proved nothing"
    later = job_in(tenant_db.acme, job.id)
    assert (later.status, later.attempts, later.finished_at) == ("failed", 1, done.finished_at)
    with tenant_db.acme:
        attempts = [(a.outcome, a.error) for a in job_attempts(job_id=job.id)]
    assert attempts == [("timed_out", "time limit of 2 s exceeded")]  # as on prefork


def test_a_job_running_past_its_limit_on_a_live_worker_is_not_run_a_second_time(
    tenant_db: Actors, threads_worker: WorkerProcess
) -> None:
    with LocalServer() as server:
        # One socket read of 12 s: the time limit's exception can only arrive when it returns.
        args = {"method": "GET", "url": server.url("/slow?seconds=12"), "timeout_seconds": 30}
        job = submit(tenant_db.globex, "http.request", args, queue=QUEUE, time_limit_seconds=2)
        threads_worker.allow(_time_limit_error("http.request", job.task_id))
        wait_for(lambda: len(server.requests) == 1, timeout=30, what="the request to arrive")
        started = time.time()
        time.sleep(8)
        overrunning = job_in(tenant_db.globex, job.id)
        assert _last_pass() > started + 4, "no reconcile pass ran meanwhile"
        assert (overrunning.status, overrunning.attempts) == ("running", 1)
        assert len(server.requests) == 1, "a second copy started while the first still ran"
        [done] = wait_final(tenant_db.globex, [job.id], timeout=30)
        print(f"a 2 s limit on a 12 s read: ended {time.time() - started:.1f}s after it began")
        time.sleep(3)  # a few more passes after the end
        assert len(server.requests) == 1, server.requests
    assert (done.status, done.error, done.attempts) == ("failed", "time limit of 2 s exceeded", 1)
