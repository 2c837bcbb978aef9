"""PostgreSQL going away under a worker: accepted jobs still end, and run once.

CONTRACT.md "Guarantees": a job answered with 2xx reaches a final state even if PostgreSQL dies
on the way. Our own PostgreSQL (tests.stacks.DatabaseStack: migrated, a tenant and a key made
with the operator's commands), stopped and started again on the same data directory and port,
with a gunicorn web server and a worker on it.
- While a job runs: its end is written when the database is back (the results backend retries
  the write across the outage: CELERY_RESULT_BACKEND_ALWAYS_RETRY).
- When a worker receives a job: the claim cannot be made, so the message is sent again later
  (jobs.runner) instead of being acked with the job left queued for good.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest

from tests.http_server import LocalServer
from tests.stacks import DatabaseStack
from tests.workers import WorkerProcess, wait_for

pytestmark = [pytest.mark.worker, pytest.mark.slow]

OUTAGE_SECONDS = 10
FINAL = ("succeeded", "failed", "cancelled")
# What a worker logs, with a traceback, while its database is away: each reconcile pass fails
# (connection refused, or the server shutting down under an open connection), and Celery logs
# each failed attempt to write a result before it retries.
OUTAGE_ERRORS = (
    r"ERROR jobs\.maintenance reconcile pass failed \(will try again\)"
    r"(?s:.*)django\.db\.utils\.(OperationalError|InterfaceError): ",
    r"WARNING celery\.backends\.base Failed operation _store_result\. Retrying \d+ more times\.",
)
# A task received meanwhile: task_prerun cannot load its tenant (Celery logs the handler's error
# and runs the task, whose runner then retries the message).
PRERUN_WITHOUT_DATABASE = (
    r"Signal handler <function _activate_task_tenant .*> raised: "
    r"OperationalError\('connection failed: .*Connection refused"
)


@pytest.fixture(scope="module")
def stack() -> Iterator[DatabaseStack]:
    # Not under pytest's tmp_path: each pytest session starting on the machine takes o+x back
    # from /tmp/pytest-of-<user>, which PostgreSQL's own account (as root) must pass to restart.
    home = Path(tempfile.mkdtemp(prefix="saas-workerdb-"))
    built = DatabaseStack(pg_dir=home / "postgres", db_name="saas_workerdb", slug="hooli")
    try:
        built.provision()
        built.start_web()
        yield built
    finally:
        built.close()
        shutil.rmtree(home, ignore_errors=True)
    assert built.web is not None
    built.web.assert_no_unexpected_errors()


def _worker(
    stack: DatabaseStack, name: str, *, expected_errors: Iterable[str] = (), **env: str
) -> WorkerProcess:
    fast = {"WORKER_HEARTBEAT_SECONDS": "1", "JOBS_RECONCILE_SECONDS": "1"}
    return WorkerProcess(
        pool="prefork",
        concurrency=1,
        env={**stack.env_overrides, **fast, **env},
        name=name,
        expected_errors=expected_errors,
    )


def _final(stack: DatabaseStack, job_id: str) -> dict | None:
    document: dict = stack.call("GET", f"/jobs/{job_id}")
    return document if document["status"] in FINAL else None


def test_a_running_jobs_end_is_recorded_across_a_database_outage(stack: DatabaseStack) -> None:
    with _worker(stack, "pg-outage") as worker:
        job = stack.call("POST", "/jobs", {"type": "demo.sleep", "args": {"seconds": 6}})
        wait_for(
            lambda: stack.call("GET", f"/jobs/{job['id']}")["status"] == "running",
            timeout=30,
            what="the job to start",
        )
        worker.allow(*OUTAGE_ERRORS)
        stack.pg.stop()
        stopped = time.monotonic()
        time.sleep(OUTAGE_SECONDS)
        stack.start_postgres()
        done = wait_for(
            lambda: _final(stack, job["id"]), timeout=120, what="the job to end\n" + worker.output()
        )
        print(f"ended {time.monotonic() - stopped:.1f}s after PostgreSQL stopped")
        assert (done["status"], done["attempts"]) == ("succeeded", 1), done
        assert [a["outcome"] for a in done["attempts_log"]] == ["succeeded"]


def test_a_job_received_while_the_database_is_down_runs_once_when_it_is_back(
    stack: DatabaseStack,
) -> None:
    with LocalServer() as server:
        # Published while no worker runs, so that the first worker to receive it finds the
        # database gone (with PostgreSQL down the API would accept nothing: 503).
        job = stack.call(
            "POST",
            "/jobs",
            {"type": "http.request", "args": {"method": "GET", "url": server.url("/echo")}},
        )
        stack.pg.stop()
        stopped = time.monotonic()
        down = True
        try:
            with _worker(
                stack,
                "pg-claim",
                expected_errors=[*OUTAGE_ERRORS, PRERUN_WITHOUT_DATABASE],
                OUTBOUND_HTTP_ALLOW_PRIVATE="true",
            ):
                time.sleep(OUTAGE_SECONDS)
                assert server.requests == [], "the job ran with its database away"
                stack.start_postgres()
                down = False
                done = wait_for(lambda: _final(stack, job["id"]), timeout=120, what="the end")
                print(f"ended {time.monotonic() - stopped:.1f}s after PostgreSQL stopped")
                time.sleep(3)  # a few reconcile passes after the end: nothing runs it again
                assert (done["status"], done["attempts"]) == ("succeeded", 1), done
                assert [a["outcome"] for a in done["attempts_log"]] == ["succeeded"]
                assert len(server.requests) == 1, server.requests
        finally:
            if down:
                stack.start_postgres()  # for whatever comes next
