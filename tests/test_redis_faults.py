"""Redis losing data or going away: accepted work still ends, and is never run twice.

Real processes on a Redis of the test's own (tests.stacks): a gunicorn web server and worker
processes, whose main processes run the reconciler. CONTRACT.md "Guarantees": a job answered
with 2xx reaches a final state even if Redis dies on the way.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Actors
from tests.http_server import LocalServer
from tests.stacks import RedisStack
from tests.workers import wait_for

pytestmark = [pytest.mark.worker, pytest.mark.slow]

FINAL = ("succeeded", "failed", "cancelled")


@pytest.fixture
def make_stack(tmp_path: Path) -> Iterator[object]:
    made: list[RedisStack] = []

    def make(**env: str) -> RedisStack:
        stack = RedisStack(redis_dir=tmp_path / f"redis{len(made)}", extra_env=env)
        made.append(stack)
        stack.start_redis()
        stack.start_web()
        return stack

    yield make
    for stack in made:
        stack.close()


def _job(stack: RedisStack, key: str, job_id: str) -> dict:
    document: dict = stack.call("GET", f"/jobs/{job_id}", key)
    return document


def test_a_job_whose_message_was_flushed_before_any_worker_ran_still_succeeds(
    tenant_db: Actors, make_stack
) -> None:
    stack: RedisStack = make_stack(WORKER_HEARTBEAT_SECONDS="1", JOBS_RECONCILE_SECONDS="1")
    key = tenant_db.acme_key
    job = stack.call("POST", "/jobs", key, {"type": "demo.add", "args": {"x": 20, "y": 22}})
    assert job["status"] == "queued"
    # Sent to this stack's broker by one dispatcher turn in a process of its own (a dispatcher
    # thread would wait for a worker to serve the queue, and the worker would take the message).
    stack.dispatch_once(tenant_db.acme.pk)
    broker = stack.broker()
    assert any(
        broker.llen(k) for k in broker.scan_iter(match="*default*") if broker.type(k) == b"list"
    )
    broker.flushdb()  # the broker's database only: as a FLUSHDB, a failover or an eviction would
    submitted = time.monotonic()
    worker = stack.start_worker("after-flush")

    def finished() -> dict | None:
        document = _job(stack, key, job["id"])
        return document if document["status"] in FINAL else None

    done = wait_for(finished, timeout=120, what="the job to finish\n" + stack.outputs())
    print(f"lost message republished, job done {time.monotonic() - submitted:.0f}s after the flush")
    assert (done["status"], done["result"], done["attempts"]) == ("succeeded", 42, 1)
    assert worker.count("whose messages were lost") >= 1


def test_a_running_job_outlives_a_redis_outage_longer_than_the_ttl_and_runs_once(
    tenant_db: Actors, make_stack
) -> None:
    # Reports every 10 s with a 30 s TTL (the defaults), Redis away for 40 s: every report
    # expires meanwhile, yet the worker is alive and must not get a second copy of its job.
    stack: RedisStack = make_stack(
        JOBS_RECONCILE_SECONDS="2",
        OUTBOUND_HTTP_ALLOW_PRIVATE="true",
    )
    key = tenant_db.acme_key
    with LocalServer() as server:
        stack.start_worker("outage")
        job = stack.call(
            "POST",
            "/jobs",
            key,
            {
                "type": "http.request",
                "args": {
                    "method": "GET",
                    "url": server.url("/slow?seconds=55"),
                    "timeout_seconds": 60,
                },
            },
        )
        wait_for(lambda: len(server.requests) >= 1, timeout=60, what="the request to arrive")
        time.sleep(3)
        stack.stop_redis()
        time.sleep(40)
        stack.start_redis()

        def finished() -> dict | None:
            document = _job(stack, key, job["id"])
            return document if document["status"] in FINAL else None

        done = wait_for(finished, timeout=120, what="the job to finish\n" + stack.outputs())
        # A few passes after the job ended: nothing started it again.
        time.sleep(6)
        assert len(server.requests) == 1, server.requests
    assert (done["status"], done["attempts"]) == ("succeeded", 1), done
    assert [attempt["outcome"] for attempt in done["attempts_log"]] == ["succeeded"]
