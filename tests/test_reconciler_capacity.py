"""The reconciler and the dispatcher run while every pool slot is busy.

Both run in threads of each worker's main process, not as tasks: a task would wait for a pool
slot, and with every slot taken by long jobs nothing stranded would be announced, sent or
rescued until one freed. Here a prefork worker's only slot sleeps while a job of another tenant,
committed but never announced (as when Redis was down at submit time), must be found by the
reconciler and sent by the dispatcher meanwhile.
"""

from __future__ import annotations

import os
from datetime import timedelta

import pytest
from django.utils import timezone
from saas_platform.lib.state_redis import state_redis

from jobs.models import Job
from jobs.services.activity import tenant_mark_active
from jobs.services.dispatch import inflight_key
from tests.conftest import Actors
from tests.jobs_helpers import job_in, queued_job, submit, wait_final
from tests.workers import WorkerProcess, wait_for

pytestmark = [pytest.mark.worker, pytest.mark.slow]

QUEUE = f"capacity-{os.getpid()}"
# Long enough to outlast many passes (one a second here), short enough for the suite.
BUSY_SECONDS = 15


def test_a_stranded_job_is_published_while_the_only_pool_slot_is_busy(tenant_db: Actors) -> None:
    env = {"WORKER_HEARTBEAT_SECONDS": "1", "JOBS_RECONCILE_SECONDS": "1"}
    with WorkerProcess(pool="prefork", concurrency=1, queues=QUEUE, env=env, name="busy"):
        busy = submit(tenant_db.acme, "demo.sleep", {"seconds": BUSY_SECONDS}, queue=QUEUE)
        wait_for(lambda: job_in(tenant_db.acme, busy.id).status == "running", what="the sleep")

        stranded = queued_job(tenant_db.globex, "demo.add", {"x": 2, "y": 3})
        with tenant_db.globex:
            # Committed a minute ago and never published; on this test's queue, so that the
            # worker whose slot is busy is the only one that could run it.
            Job.objects.filter(id=stranded.id).update(
                queue=QUEUE, created_at=timezone.now() - timedelta(minutes=1)
            )
        tenant_mark_active(tenant_db.globex.pk)  # as a submission does after its commit
        # Not announced to the dispatcher: only the reconciler's pass can find it. Other tests'
        # jobs, sent and never run, must not hold globex's concurrency slots here.
        state_redis().delete(inflight_key(tenant_db.globex.pk))

        published = wait_for(
            lambda: job_in(tenant_db.globex, stranded.id).published_at,
            timeout=10,
            what="the reconciler to publish the stranded job",
        )
        sleeping = job_in(tenant_db.acme, busy.id)
        assert sleeping.status == "running", "published only once the slot was free"
        assert sleeping.started_at is not None
        print(f"published {(published - sleeping.started_at).total_seconds():.1f}s into the sleep")

        [slept] = wait_final(tenant_db.acme, [busy.id], timeout=BUSY_SECONDS + 30)
        [added] = wait_final(tenant_db.globex, [stranded.id], timeout=30)
    assert (slept.status, added.status, added.result, added.attempts) == (
        "succeeded",
        "succeeded",
        5,
        1,
    )
    assert added.started_at >= slept.finished_at  # it waited for the one slot, as it should
