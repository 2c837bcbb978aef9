"""With Redis stopped, a submission is accepted and the job runs after Redis returns.

CONTRACT.md "Guarantees": a job answered with 2xx is never lost. Real processes: our own Redis
(so it can be stopped), a gunicorn web server, and a worker whose main process runs the
reconciler every second, all on the run's test database. Submitting must not hang while Redis
is down: the row is committed unpublished and the reconciler publishes it once Redis is back.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from saas_platform.lib.embedded import EmbeddedService, start_redis

from jobs.models import Job, JobStatus
from tests.conftest import Actors
from tests.servers import Proc, Reply, free_port, http_call, start_web
from tests.workers import CELERY, wait_for, worker_environment

pytestmark = [pytest.mark.worker, pytest.mark.slow]


# Failure detection, not speed: with Redis refusing connections the publish gives up at once (a
# few hundredths of a second), so a submission that takes this long waited on the broker. Far
# below the 20 s the client waits for an answer.
SUBMIT_BOUND_SECONDS = 6


def submit(port: int, key: str, x: int, *, timeout: float = 30) -> Reply:
    return http_call(
        port,
        "POST",
        "/api/v1/jobs",
        key=key,
        body={"type": "demo.add", "args": {"x": x, "y": 1}},
        timeout=timeout,
    )


def job_status(port: int, key: str, job_id: str) -> dict[str, Any]:
    reply = http_call(port, "GET", f"/api/v1/jobs/{job_id}", key=key)
    assert reply.status == 200, reply.body
    document: dict[str, Any] = reply.json()
    return document


# --- fixtures ---------------------------------------------------------------------------------


@dataclass
class Stack:
    """Our own Redis, a web server and a worker with beat; `close()` stops all of them."""

    redis_dir: Path
    redis_port: int
    web_port: int
    redis_runs: list[EmbeddedService] = field(default_factory=list)
    procs: dict[str, Proc] = field(default_factory=dict)

    @property
    def redis(self) -> EmbeddedService:
        return self.redis_runs[-1]

    def start_redis(self) -> EmbeddedService:
        self.redis_runs.append(start_redis(self.redis_dir, port=self.redis_port))
        return self.redis

    @property
    def web(self) -> Proc:
        return self.procs["web"]

    @property
    def worker(self) -> Proc:
        return self.procs["worker"]

    def outputs(self) -> str:
        return "".join(proc.output() for proc in self.procs.values())

    def close(self) -> None:
        for proc in reversed(self.procs.values()):
            proc.stop()
        for run in self.redis_runs:
            run.stop()


@pytest.fixture
def stack(tenant_db: Actors, tmp_path: Path) -> Iterator[Stack]:
    built = Stack(redis_dir=tmp_path / "redis", redis_port=free_port(), web_port=free_port())
    try:
        built.start_redis()
        env = worker_environment()
        env["REDIS_URL"] = built.redis.url
        env["JOBS_RECONCILE_SECONDS"] = "1"
        args = [
            CELERY, "-A", "saas_platform", "worker", "-l", "INFO",
            "-P", "threads", "-c", "2", "-n", f"broker-down-{os.getpid()}@%h",
            "--without-gossip", "--without-mingle", "--without-heartbeat",
        ]  # fmt: skip
        built.procs["worker"] = Proc("worker", args, env)
        built.procs["web"] = start_web(env, built.web_port)
        worker = built.worker
        wait_for(lambda: worker.count(" ready.") or not worker.alive, timeout=60, what="worker")
        assert worker.alive, worker.output()
        yield built
    finally:
        built.close()
    # Any error the worker logged besides those the test declared (Proc.allow) fails the test.
    built.worker.assert_no_unexpected_errors()


def last_reconcile_pass(stack: Stack) -> float:
    import redis
    from saas_platform.lib.service_urls import redis_with_db

    client = redis.Redis.from_url(redis_with_db(stack.redis.url, 2))
    raw = client.get(f"{os.environ['REDIS_KEY_PREFIX']}reconcile:last-pass")
    return float(raw) if raw else 0.0


# --- the test ---------------------------------------------------------------------------------


def test_with_redis_down_a_submission_is_accepted_without_hanging_and_runs_once_it_returns(
    tenant_db: Actors, stack: Stack
) -> None:
    key = tenant_db.acme_key
    port = stack.web_port

    # Warm-up with Redis up: the whole path works, and the web process holds broker connections
    # that the outage will break (the realistic case).
    warm = submit(port, key, 1)
    assert warm.status == 202, warm.body
    wait_for(
        lambda: job_status(port, key, warm.json()["id"])["status"] == "succeeded",
        timeout=30,
        what="the warm-up job\n" + stack.outputs(),
    )

    # The outage itself: the consumer and the embedded beat log their failed reconnects.
    stack.worker.allow(r"consumer: Cannot connect to redis://", r"beat: Connection error: ")
    stack.redis.stop()
    stopped_at = time.monotonic()

    reply = submit(port, key, 41, timeout=20)
    assert reply.status == 202, (reply.body, stack.outputs())
    assert reply.seconds < SUBMIT_BOUND_SECONDS, f"the submission took {reply.seconds:.1f}s"
    job_id = reply.json()["id"]
    with tenant_db.acme:
        row = Job.objects.get(id=job_id)
    assert row.status == JobStatus.QUEUED
    assert row.published_at is None

    # Keep Redis down a little longer than the reconciler's grace period for unpublished jobs:
    # the reconciler keeps trying against a dead Redis meanwhile.
    time.sleep(max(0.0, 6 - (time.monotonic() - stopped_at)))
    assert stack.worker.alive, stack.worker.output()
    stack.start_redis()
    restarted_at = time.monotonic()

    def finished() -> dict[str, Any] | None:
        document = job_status(port, key, job_id)
        return document if document["status"] in ("succeeded", "failed", "cancelled") else None

    done = wait_for(finished, timeout=60, what="the job to finish\n" + stack.outputs())
    print(
        f"submit with Redis down: {reply.seconds:.2f}s; "
        f"finished {time.monotonic() - restarted_at:.1f}s after Redis returned"
    )
    assert done["status"] == "succeeded", done
    assert done["result"] == 42
    with tenant_db.acme:
        assert Job.objects.get(id=job_id).published_at is not None

    # The worker and its reconciler lived through the outage: passes go on.
    assert stack.worker.alive, stack.worker.output()
    passes_before = last_reconcile_pass(stack)
    wait_for(
        lambda: last_reconcile_pass(stack) > passes_before,
        timeout=10,
        what="the reconciler to keep passing\n" + stack.worker.output(),
    )
