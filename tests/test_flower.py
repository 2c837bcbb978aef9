"""Flower on the same broker shows each task with its tenant (README, "Observability")."""

from __future__ import annotations

import json
import urllib.request

import pytest

from tests.jobs_helpers import job_in, submit, wait_final
from tests.servers import Proc, free_port
from tests.workers import CELERY, WorkerProcess, wait_for, worker_environment

pytestmark = [pytest.mark.worker, pytest.mark.slow]


def _tasks(port: int) -> dict:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/tasks", timeout=5) as reply:
            found: dict = json.loads(reply.read())
    except OSError:
        return {}
    return found


def test_flower_lists_each_task_with_its_tenant(tenant_db):
    port = free_port()
    # The API unauthenticated for this test only (deployments put authentication in front).
    env = {**worker_environment(), "FLOWER_UNAUTHENTICATED_API": "true"}
    flower = Proc(
        "flower",
        [CELERY, "-A", "saas_platform", "flower", "--address=127.0.0.1", f"--port={port}"],
        env,
    )
    try:
        wait_for(lambda: _tasks(port) == {} and flower.count("Visit me at") > 0, what="flower")
        with WorkerProcess(pool="prefork", concurrency=1, env={"CELERY_EVENTS": "true"}):
            acme = submit(tenant_db.acme, "demo.add", {"x": 1, "y": 2})
            globex = submit(tenant_db.globex, "demo.add", {"x": 3, "y": 4})
            wait_final(tenant_db.acme, [acme.id])
            wait_final(tenant_db.globex, [globex.id])
            ids = {
                str(job_in(tenant_db.acme, acme.id).task_id): "acme",
                str(job_in(tenant_db.globex, globex.id).task_id): "globex",
            }
            tasks = wait_for(
                lambda: (t := _tasks(port)) and set(ids) <= set(t) and t,
                timeout=30,
                what="flower to list both tasks",
            )
    finally:
        flower.stop()
    for task_id, slug in ids.items():
        assert tasks[task_id]["name"] == "demo.add"
        assert tasks[task_id]["args"].endswith(f"tenant={slug}")
        assert tasks[task_id]["state"] == "SUCCESS"
