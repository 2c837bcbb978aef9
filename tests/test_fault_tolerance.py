"""Faults not covered elsewhere (killed workers and pool children: test_worker_death.py and
test_worker_faults.py; PostgreSQL stopped: test_worker_database_down.py and
test_api_database_down.py; Redis flushed or away: test_redis_faults.py):

- a worker stopped with SIGTERM (warm shutdown) finishes what it runs and leaves nothing in the
  broker for the visibility timeout: the rest runs on the other worker at once;
- the same message delivered twice has one effect;
- Redis restarted empty, its data files gone, under a running worker: every accepted job still
  ends, run once, and the same worker goes on consuming without a restart.

Each test injects its fault into servers it owns or into messages it sends itself.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest
from celery import current_app

from jobs.models import JobAttempt
from tests.conftest import Actors
from tests.http_server import LocalServer
from tests.jobs_helpers import dispatch_now, job_in, submit, wait_final
from tests.stacks import RedisStack
from tests.workers import WorkerProcess, unacked_in_broker, wait_for

pytestmark = [pytest.mark.worker, pytest.mark.slow]

FAST = {"WORKER_HEARTBEAT_SECONDS": "1", "JOBS_RECONCILE_SECONDS": "1"}
FINAL = ("succeeded", "failed", "cancelled")


def _outcomes(tenant, job_ids) -> dict[str, list[str]]:
    with tenant:
        rows = JobAttempt.objects.filter(job_id__in=job_ids).order_by("number")
        found: dict[str, list[str]] = {str(j): [] for j in job_ids}
        for row in rows:
            found[str(row.job_id)].append(row.outcome)
    return found


def test_a_warm_shutdown_finishes_its_jobs_and_hands_nothing_to_the_visibility_timeout(
    tenant_db: Actors,
) -> None:
    tenant = tenant_db.globex
    with (
        WorkerProcess(pool="prefork", concurrency=2, name="stays", env=FAST) as stays,
        WorkerProcess(pool="prefork", concurrency=2, name="leaves", env=FAST) as leaves,
    ):
        jobs = [submit(tenant, "demo.sleep", {"seconds": 3}) for _ in range(8)]
        ids = [str(j.id) for j in jobs]
        wait_for(
            lambda: any(leaves.ran(job_in(tenant, i).worker or "") for i in ids),
            what="the leaving worker to run a job",
        )
        incarnation = leaves.incarnation
        sigterm_at = time.monotonic()
        leaves.stop()  # SIGTERM, then waits for the process to exit
        stopped_after = time.monotonic() - sigterm_at
        # Warm: it exited once its running jobs were done, not after a visibility timeout.
        assert stopped_after < 15, stopped_after
        assert unacked_in_broker(incarnation) == set()
        done = wait_final(tenant, ids, timeout=60)
        finished_after = time.monotonic() - sigterm_at
        assert stays.alive
    assert {j.status for j in done} == {"succeeded"}
    # Nothing was lost or run twice: every job has exactly one attempt, which succeeded.
    assert set(map(tuple, _outcomes(tenant, ids).values())) == {("succeeded",)}
    # The jobs it did not get to ran on the other worker within seconds, not the 80 s a dead
    # worker's jobs take, nor the 2-hour visibility timeout.
    assert finished_after < 40, finished_after
    print(f"worker stopped {stopped_after:.1f}s after SIGTERM; all done {finished_after:.1f}s")


def test_the_same_message_delivered_twice_has_one_effect(tenant_db: Actors) -> None:
    tenant = tenant_db.acme
    with LocalServer() as target:
        job = submit(
            tenant,
            "http.request",
            {"method": "POST", "url": target.url("/flaky?key=dup&failures=0"), "body": "x"},
        )
        assert dispatch_now(tenant) == 1
        task_id = str(job_in(tenant, job.id).task_id)
        # A second copy of the very message, as a broker redelivery or a publisher's retry
        # would send it (the tenant header is stamped on publish, as for the first).
        with tenant:
            current_app.send_task(
                job.type, args=[str(job.id)], task_id=task_id, queue=job_in(tenant, job.id).queue
            )
        with WorkerProcess(
            pool="prefork", concurrency=2, env={"OUTBOUND_HTTP_ALLOW_PRIVATE": "true"}
        ) as worker:
            [done] = wait_final(tenant, [job.id])
            received = f"[{task_id}] received"
            wait_for(lambda: worker.count(received) >= 2, what="both copies to be received")
            time.sleep(1)  # the second copy's attempt, had it run, would have called by now
        assert target.counters["dup"] == 1
    assert (done.status, done.attempts) == ("succeeded", 1)
    assert _outcomes(tenant, [job.id])[str(job.id)] == ["succeeded"]


def test_redis_restarted_empty_under_a_running_worker_loses_no_job(
    tenant_db: Actors, tmp_path: Path
) -> None:
    stack = RedisStack(redis_dir=tmp_path / "redis", extra_env=FAST)
    key = tenant_db.acme_key
    try:
        stack.start_redis()
        stack.start_web()
        worker = stack.start_worker("through-restart", concurrency=2)
        worker.allow(
            # What a worker logs while its broker is gone, and the reconciler's repairs after.
            r"consumer: Cannot connect to redis",
            r"Connection to broker lost",
            r"reconcile pass failed",
            r"Error while reading from",
            r"Connection refused",
            r"heartbeat",
            r"dispatch",
        )
        first = [
            stack.call("POST", "/jobs", key, {"type": "demo.sleep", "args": {"seconds": 2}})["id"]
            for _ in range(4)
        ]
        wait_for(
            lambda: any(stack.call("GET", f"/jobs/{i}", key)["status"] == "running" for i in first),
            what="a job to run",
        )
        # A marker proves the restart came up empty; a count of keys would race with the
        # worker, which declares its queue bindings again as soon as it reconnects.
        stack.broker().set("written-before-the-restart", 1)
        stack.stop_redis()
        for entry in stack.redis_dir.iterdir():  # its append-only file and snapshot: empty
            if entry.is_dir():
                shutil.rmtree(entry)
            elif entry.suffix != ".log":
                entry.unlink()
        stack.start_redis()
        assert not stack.broker().exists("written-before-the-restart", "unacked")
        later = [
            stack.call("POST", "/jobs", key, {"type": "demo.add", "args": {"x": n, "y": 1}})["id"]
            for n in range(4)
        ]

        def all_final() -> list[dict] | None:
            docs = [stack.call("GET", f"/jobs/{i}", key) for i in first + later]
            return docs if all(d["status"] in FINAL for d in docs) else None

        docs = wait_for(all_final, timeout=180, what="every job to end\n" + stack.outputs())
        assert worker.alive  # the same process consumed again, nobody restarted it
    finally:
        stack.close()
    assert {d["status"] for d in docs} == {"succeeded"}
    assert [d["result"] for d in docs[len(first) :]] == [1, 2, 3, 4]
    for document in docs:
        # At most the attempt Redis's loss interrupted, then one that succeeded.
        outcomes = [a["outcome"] for a in document["attempts_log"]]
        assert outcomes[-1] == "succeeded"
        assert outcomes.count("succeeded") == 1
