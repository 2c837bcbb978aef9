"""A suspended tenant (`manage.py tenant_suspend`, the admin's action) with real worker and
beat processes: its schedule does not fire, its queued and delayed jobs do not run and its API
key gets 403; after resume all of it runs, once, and nothing is lost. (The parts one by one, in this process:
test_dispatch_turn.py, test_schedule_policies.py, test_api_auth.py.)"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from jobs.models import Job, JobStatus, Schedule, ScheduleRun
from tests.api_client import call
from tests.schedule_helpers import BeatProcess, fresh_tenant, schedule_create_via_api
from tests.workers import WorkerProcess, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.worker]

HELD_SECONDS = 8  # past the delayed job's due time and several of the schedule's occurrences


@pytest.fixture
def suspendable(tenant_db: Any) -> Iterator[tuple[Any, str]]:
    from jobs.schedules.services import schedule_delete
    from tenants.services import tenant_set_active

    tenant, key = fresh_tenant("suspendme")
    yield tenant, key
    tenant_set_active(tenant=tenant, active=True)
    with tenant:
        # Its schedule ends with the test: later beats do not run it.
        for schedule in Schedule.objects.select_related("periodic_task"):
            schedule_delete(schedule=schedule)


def _submit(key: str, x: int, **extra: Any) -> str:
    answer = call(
        "POST", "/jobs", key=key, body={"type": "demo.add", "args": {"x": x, "y": 1}, **extra}
    )
    assert answer.status == 202, answer.body
    return str(answer.body["id"])


def test_a_suspended_tenant_holds_its_jobs_and_schedule_and_runs_them_all_once_resumed(
    suspendable,
):
    from tenants.services import tenant_set_active

    tenant, key = suspendable
    submitted = [_submit(key, x) for x in range(3)] + [_submit(key, 10, delay_seconds=2)]
    schedule_id = int(schedule_create_via_api(key, interval_seconds=2)["id"])
    tenant_set_active(tenant=tenant, active=False)

    with BeatProcess(), WorkerProcess(pool="threads", concurrency=4):
        time.sleep(HELD_SECONDS)
        with tenant:
            held = dict(Job.objects.values_list("id", "status"))
            assert not ScheduleRun.objects.filter(schedule_id=schedule_id).exists()
        assert sorted(map(str, held)) == sorted(submitted)  # the schedule made no job
        assert set(held.values()) <= {JobStatus.QUEUED, JobStatus.SCHEDULED}, held
        refused = call(
            "POST", "/jobs", key=key, body={"type": "demo.add", "args": {"x": 1, "y": 1}}
        )
        assert refused.status == 403, refused.body

        tenant_set_active(tenant=tenant, active=True)

        def everything_ran() -> list[Job] | None:
            with tenant:
                jobs = list(Job.objects.all())
            mine = [job for job in jobs if str(job.id) in submitted]
            scheduled = [job for job in jobs if job.schedule_id == schedule_id]
            done = all(job.status == JobStatus.SUCCEEDED for job in mine + scheduled)
            return jobs if done and len(mine) == len(submitted) and scheduled else None

        jobs = wait_for(everything_ran, timeout=60, what="the held jobs and a scheduled run")
    results = {str(job.id): job.result for job in jobs}
    assert [results[job_id] for job_id in submitted] == [1, 2, 3, 11]
    assert {job.attempts for job in jobs} == {1}  # each ran once
    assert _submit(key, 5)  # the key is accepted again
