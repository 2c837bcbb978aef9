"""The seed's task options per job type (jobs.catalogue): the Celery task each type registers,
a soft time limit's end of an attempt, and ignore_result's success recorded by the runner. The
same on a real worker: tests/test_workflows_worker.py (no result row for email.send)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from celery.exceptions import SoftTimeLimitExceeded
from django_celery_results.models import TaskResult

from jobs.catalogue import JobType, catalogue
from jobs.models import JobAttempt
from jobs.tasks import JOB_TASKS
from tests.jobs_helpers import job_in, queued_job, run_attempt


def test_each_job_types_task_carries_its_options():
    for name, job_type in catalogue().items():
        task = JOB_TASKS[name]
        assert task.time_limit == job_type.time_limit_seconds
        assert task.soft_time_limit == job_type.soft_time_limit_seconds
        assert task.ignore_result == job_type.ignore_result
        # What only Celery's main process sees of an ignore_result task is still stored.
        assert task.store_errors_even_if_ignored
    assert JOB_TASKS["email.send"].ignore_result
    assert JOB_TASKS["demo.primes"].soft_time_limit == 1740


@pytest.mark.parametrize(
    "options",
    [{"soft_time_limit_seconds": 120}, {"soft_time_limit_seconds": 0}],
)
def test_a_soft_limit_not_below_the_hard_one_is_refused(options: dict[str, Any]):
    with pytest.raises(ValueError, match="soft time limit"):
        replace(catalogue()["demo.add"], **options)


def _patched(monkeypatch: pytest.MonkeyPatch, name: str, **changes: Any) -> JobType:
    patched = replace(catalogue()[name], **changes)
    monkeypatch.setitem(catalogue(), name, patched)
    return patched


def test_a_soft_time_limit_ends_the_attempt_timed_out_without_a_retry(tenant_db, monkeypatch):
    def too_slow(context: Any, args: dict[str, Any]) -> None:
        raise SoftTimeLimitExceeded()

    _patched(monkeypatch, "demo.add", run=too_slow, soft_time_limit_seconds=60)
    job = queued_job(tenant_db.acme, "demo.add", {"x": 1, "y": 2}, max_attempts=3)
    task = run_attempt(tenant_db.acme, job)
    assert isinstance(task.raised, SoftTimeLimitExceeded)
    ended = job_in(tenant_db.acme, job.id)
    assert (ended.status, ended.attempts) == ("failed", 1)
    assert ended.error == "soft time limit of 60 s exceeded"
    with tenant_db.acme:
        assert JobAttempt.objects.get(job_id=job.id).outcome == "timed_out"


def test_a_type_with_result_rows_leaves_its_success_to_the_results_backend(tenant_db):
    job = queued_job(tenant_db.acme, "demo.add", {"x": 1, "y": 2})
    # Recorded when Celery stores the result (no results backend runs here): not by the runner.
    run_attempt(tenant_db.acme, job)
    assert job_in(tenant_db.acme, job.id).status == "running"


def test_the_runner_records_an_ignore_result_types_success_itself(tenant_db, monkeypatch):
    _patched(monkeypatch, "demo.add", ignore_result=True)
    job = queued_job(tenant_db.acme, "demo.add", {"x": 1, "y": 2})
    run_attempt(tenant_db.acme, job)
    ended = job_in(tenant_db.acme, job.id)
    assert (ended.status, ended.result) == ("succeeded", 3)
    with tenant_db.acme:
        assert JobAttempt.objects.get(job_id=job.id).outcome == "succeeded"
        assert not TaskResult.objects.filter(task_id=str(job.task_id)).exists()
