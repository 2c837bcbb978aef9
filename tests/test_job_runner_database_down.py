"""Fault injection: the database is unreachable when a worker claims a job. The message must be
sent again later (no attempt used), not acked as failed with the job left queued forever."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from celery.exceptions import Retry
from django.db import OperationalError

import jobs.runner
from jobs.runner import DATABASE_RETRY_SECONDS, job_run_attempt


class FakeTask:
    """Only what job_run_attempt reads from a bound Celery task, and a recorded retry."""

    def __init__(self) -> None:
        self.request = SimpleNamespace(id="t-1", hostname="w@h", delivery_info={})
        self.retried: dict = {}

    def retry(self, **kwargs):
        self.retried = kwargs
        return Retry("retry", exc=kwargs.get("exc"), when=kwargs.get("countdown"))


def test_an_unreachable_database_at_claim_time_retries_the_message(monkeypatch):
    def unreachable(**_):
        raise OperationalError("connection refused")

    monkeypatch.setattr(jobs.runner, "job_claim", unreachable)
    task = FakeTask()
    with pytest.raises(Retry):
        job_run_attempt(task, "00000000-0000-0000-0000-000000000001")  # type: ignore[arg-type]
    assert task.retried["countdown"] == DATABASE_RETRY_SECONDS
    assert task.retried["max_retries"] is None
