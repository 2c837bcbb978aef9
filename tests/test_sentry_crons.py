"""Sentry Crons check-ins of monitored tenant schedules: a real beat submits the runs, a real
worker runs them with SENTRY_DSN pointing at a local stand-in for Sentry (tests/sentry_sink.py),
and the check-ins read here are the bytes the SDK sent."""

from __future__ import annotations

import json
import time
import uuid
from collections import Counter
from datetime import timedelta

import pytest
from django.utils import timezone

from jobs.models import Job, Schedule
from jobs.schedules.services import schedule_delete
from tests.jobs_helpers import wait_final
from tests.schedule_helpers import BeatProcess, fresh_tenant, schedule_create_via_api
from tests.sentry_sink import SentrySink
from tests.workers import WorkerProcess, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.worker]

SLUG = "beatcrons"
RAISED = r"raised unexpected: DemoFailure"
# After the last check-in expected, how long the sink must stay quiet for "no more" to mean much.
QUIET_SECONDS = 3
# What a check-in may hold: the SDK strips tags, extra, breadcrumbs and user from check-ins.
CHECKIN_KEYS = {
    "type", "check_in_id", "monitor_slug", "status", "duration", "environment", "release",
    "monitor_config", "contexts", "timestamp", "event_id", "sdk", "platform", "server_name",
}  # fmt: skip


@pytest.fixture
def tenant(tenant_db):
    tenant, key = fresh_tenant(SLUG)
    yield tenant, key
    with tenant:
        for schedule in Schedule.objects.select_related("periodic_task"):
            schedule_delete(schedule=schedule)  # no later beat runs them


def _due_now(tenant, schedule_id: int) -> None:
    """A one-minute interval first fires a minute after it was made: move its grid back (before
    the beat loads it) so that it is due in two seconds."""
    start = timezone.now() - timedelta(seconds=58)
    with tenant:
        Schedule.objects.filter(pk=schedule_id).update(anchor=start, last_due_at=start)


def test_a_monitored_schedules_jobs_check_in_with_slug_and_status_and_nothing_else(tenant):
    tenant, key = tenant
    secret = f"secret-{uuid.uuid4().hex}"
    adder = schedule_create_via_api(
        key, name="adder", args={"x": 424242.5, "y": 1}, interval_seconds=60,
        monitor_slug="adder", timezone="Europe/Berlin",
    )  # fmt: skip
    failer = schedule_create_via_api(
        key, name="failer", type="demo.fail", args={"message": secret}, interval_seconds=60,
        monitor_slug="failer",
    )  # fmt: skip
    plain = schedule_create_via_api(key, name="plain", interval_seconds=60)
    for schedule in (adder, failer, plain):
        _due_now(tenant, schedule["id"])

    with SentrySink() as sink:
        worker = WorkerProcess(
            pool="prefork", concurrency=2, expected_errors=[RAISED],
            env={"SENTRY_DSN": sink.dsn, "SENTRY_ENVIRONMENT": "ci"},
        )  # fmt: skip
        with BeatProcess(), worker:

            def made() -> list[Job] | None:
                with tenant:
                    jobs = list(Job.objects.filter(schedule_id__isnull=False))
                return jobs if len(jobs) >= 3 else None

            made_jobs = wait_for(made, timeout=30, what="a job of each schedule")
            jobs = wait_final(tenant, [job.id for job in made_jobs], timeout=60)
            wait_for(
                lambda: Counter(c["status"] for c in sink.checkins())["error"],
                timeout=20,
                what="the failing job's error check-in",
            )
            time.sleep(QUIET_SECONDS)
        checkins = sink.checkins()

    by_schedule = {job.schedule_id: job for job in jobs}
    added, failed = by_schedule[adder["id"]], by_schedule[failer["id"]]
    assert (added.status, failed.status, failed.attempts) == ("succeeded", "failed", 3)
    # The plain schedule's job checks in nowhere; each monitored job on its own check-in, named
    # after the job, so every attempt (on any pool child) reports on the same one.
    by_slug: dict[str, list[dict]] = {}
    for checkin in checkins:
        by_slug.setdefault(checkin["monitor_slug"], []).append(checkin)
    assert set(by_slug) == {f"{SLUG}-adder", f"{SLUG}-failer"}
    adds, fails = by_slug[f"{SLUG}-adder"], by_slug[f"{SLUG}-failer"]
    assert [c["status"] for c in adds] == ["in_progress", "ok"]
    assert {c["check_in_id"] for c in adds} == {added.id.hex}
    # A retried attempt sends nothing: the check-in stays in progress until the job ends.
    assert [c["status"] for c in fails] == ["in_progress"] * 3 + ["error"]
    assert {c["check_in_id"] for c in fails} == {failed.id.hex}
    assert {c["environment"] for c in checkins} == {"ci"}

    # Sentry creates the monitor from the first check-in: the schedule, its zone, the margins.
    config = adds[0]["monitor_config"]
    assert config["schedule"] == {"type": "interval", "value": 1, "unit": "minute"}
    assert config["timezone"] == "Europe/Berlin"
    assert (config["checkin_margin"], config["max_runtime"]) == (2, 7)
    assert "monitor_config" not in adds[1]

    # Nothing of the jobs' arguments, tags or context: the slug, the status, the ids.
    for checkin in checkins:
        assert set(checkin) <= CHECKIN_KEYS, set(checkin) - CHECKIN_KEYS
        assert set(checkin.get("contexts", {})) <= {"trace"}
    sent = json.dumps(checkins)
    assert secret not in sent
    assert "424242" not in sent


def test_a_monitored_job_its_main_process_ends_checks_in_an_error(tenant):
    # A hard time limit: the child is killed and Celery's main process records the failure
    # (jobs.results_backend), so the task itself never reports its end.
    from jobs.services.submission import JobRequest, job_submit

    tenant, key = tenant
    sleeper = schedule_create_via_api(
        key, name="sleeper", type="demo.sleep", args={"seconds": 30}, interval_seconds=3600,
        monitor_slug="sleeper",
    )  # fmt: skip
    with tenant:
        job = job_submit(
            request=JobRequest(type="demo.sleep", args={"seconds": 30}, time_limit_seconds=1),
            submitted_by=f"schedule:{sleeper['id']}",
            schedule_id=sleeper["id"],
        )
    with SentrySink() as sink:
        worker = WorkerProcess(
            pool="prefork", concurrency=1, env={"SENTRY_DSN": sink.dsn},
            expected_errors=[r"Hard time limit \(1s\) exceeded", r"TimeLimitExceeded\(1\)"],
        )  # fmt: skip
        with worker:
            [done] = wait_final(tenant, [job.id], timeout=60)
            wait_for(
                lambda: [c for c in sink.checkins() if c["status"] == "error"],
                timeout=20,
                what="the error check-in",
            )
            time.sleep(QUIET_SECONDS)
        checkins = sink.checkins()
    assert done.status == "failed"
    assert done.error.startswith("TimeLimitExceeded")
    assert [(c["monitor_slug"], c["status"]) for c in checkins] == [
        (f"{SLUG}-sleeper", "in_progress"),
        (f"{SLUG}-sleeper", "error"),
    ]
    assert {c["check_in_id"] for c in checkins} == {job.id.hex}
