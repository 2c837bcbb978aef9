"""The tenant-aware beat as a real process (with a real worker): schedules fire in their
tenant's schema only, a pause stops them within 2 s, two beats run each occurrence once, a
standby takes over from a killed beat, and one tenant's broken entry does not stop another's."""

from __future__ import annotations

import itertools
import time
import urllib.request
from datetime import timedelta

import pytest
from django.utils import timezone

from jobs.models import Job, JobStatus, Schedule, ScheduleRun, ScheduleRunOutcome
from tests.api_client import call
from tests.schedule_helpers import BeatProcess, fresh_tenant, schedule_create_via_api
from tests.servers import free_port
from tests.workers import WorkerProcess, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.worker]


@pytest.fixture(autouse=True)
def _schedules_removed_after(tenant_db):
    """Each test's schedules end with it: later beats (this file's, others') do not run them."""
    yield
    from jobs.schedules.services import schedule_delete
    from tenants.models import Tenant

    for tenant in Tenant.objects.filter(schema_name__startswith="beat"):
        with tenant:
            for schedule in Schedule.objects.select_related("periodic_task"):
                schedule_delete(schedule=schedule)  # both rows, as the API does


def _jobs(tenant, schedule_id: int) -> list[Job]:
    with tenant:
        return list(Job.objects.filter(schedule_id=schedule_id).order_by("created_at"))


def _runs(tenant, schedule_id: int) -> list[ScheduleRun]:
    with tenant:
        return list(ScheduleRun.objects.filter(schedule_id=schedule_id).order_by("due_at"))


def test_a_two_second_schedule_runs_in_its_tenant_only_and_pauses_within_two_seconds(tenant_db):
    tenant, key = fresh_tenant("beata")
    other, _ = fresh_tenant("beatb")
    with BeatProcess() as beat, WorkerProcess(pool="threads", concurrency=4):
        schedule = schedule_create_via_api(key, interval_seconds=2)
        wait_for(lambda: len(_jobs(tenant, schedule["id"])) >= 3, timeout=30, what="3 runs")
        jobs = _jobs(tenant, schedule["id"])
        assert {job.submitted_by for job in jobs} == {f"schedule:{schedule['id']}"}
        done = wait_for(
            lambda: (
                all(j.status == JobStatus.SUCCEEDED for j in _jobs(tenant, schedule["id"])[:3])
                and _jobs(tenant, schedule["id"])
            ),
            timeout=30,
            what="the scheduled jobs to succeed",
        )
        assert done[0].result == 3
        with other:
            assert not Job.objects.exists()
        document = call("GET", f"/schedules/{schedule['id']}", key=key).body
        assert document["last_job"] is not None
        assert document["last_run_at"] is not None

        paused = call("PATCH", f"/schedules/{schedule['id']}", key=key, body={"enabled": False})
        assert paused.status == 200
        effective = timezone.now() + timedelta(seconds=2)
        time.sleep(6)
        late = [job for job in _jobs(tenant, schedule["id"]) if job.created_at > effective]
        assert late == []

        count = len(_jobs(tenant, schedule["id"]))
        call("PATCH", f"/schedules/{schedule['id']}", key=key, body={"enabled": True})
        wait_for(
            lambda: len(_jobs(tenant, schedule["id"])) >= count + 2, timeout=10, what="resumed"
        )
    assert beat.count("beat holds the lease") == 1


def _assert_each_occurrence_once(tenant, schedule_id: int) -> list[ScheduleRun]:
    runs = _runs(tenant, schedule_id)
    jobs = _jobs(tenant, schedule_id)
    # One job per recorded occurrence and no job without one: nothing ran twice.
    assert sorted(str(run.job_id) for run in runs) == sorted(str(job.id) for job in jobs)
    assert {run.outcome for run in runs} == {ScheduleRunOutcome.SUBMITTED}
    dues = [run.due_at for run in runs]
    assert len(dues) == len(set(dues))
    return runs


def test_two_beats_run_each_occurrence_once_and_a_standby_takes_over_a_killed_one(tenant_db):
    tenant, key = fresh_tenant("beatlease")
    first = BeatProcess(name="beat-1")
    second = BeatProcess(name="beat-2")
    with first, second:
        schedule = schedule_create_via_api(key, interval_seconds=1)
        time.sleep(20)
        runs = _assert_each_occurrence_once(tenant, schedule["id"])
        # Each second got its occurrence (one may be in flight at either end).
        assert len(runs) >= 18
        gaps = {(b.due_at - a.due_at).total_seconds() for a, b in itertools.pairwise(runs)}
        assert gaps == {1.0}
        active, standby = (first, second) if first.count("holds the lease") else (second, first)
        assert standby.count("holds the lease") == 0
        before = len(runs)
        active.kill()
        killed_at = timezone.now()
        wait_for(lambda: standby.count("holds the lease"), timeout=10, what="the takeover")
        wait_for(
            lambda: any(r.created_at > killed_at for r in _runs(tenant, schedule["id"])),
            timeout=10,
            what="a run by the standby",
        )
        took_over = min(
            r.created_at for r in _runs(tenant, schedule["id"]) if r.created_at > killed_at
        )
        assert took_over - killed_at < timedelta(seconds=10)
        time.sleep(3)
        after = _assert_each_occurrence_once(tenant, schedule["id"])
        assert len(after) > before


def test_an_entry_whose_job_type_is_gone_does_not_stop_another_tenants(tenant_db):
    broken, broken_key = fresh_tenant("beatbroken")
    fine, fine_key = fresh_tenant("beatfine")
    bad = schedule_create_via_api(broken_key, name="gone", interval_seconds=1)
    good = schedule_create_via_api(fine_key, name="fine", interval_seconds=1)
    with broken:
        # As if the job type had been removed from the catalogue by a later deploy.
        Schedule.objects.filter(pk=bad["id"]).update(type="demo.removed")
    with BeatProcess() as beat:
        wait_for(lambda: len(_runs(fine, good["id"])) >= 4, timeout=30, what="the good schedule")
    failed = _runs(broken, bad["id"])
    assert failed
    assert {run.outcome for run in failed} == {ScheduleRunOutcome.FAILED}
    assert "demo.removed" in failed[0].error
    assert _jobs(broken, bad["id"]) == []
    assert beat.count("not submitted: UnknownJobType") >= 1


def test_the_static_platform_schedule_runs_in_public_from_the_same_beat(tenant_db):
    from saas_platform.lib.state_redis import state_key, state_redis

    tenant, key = fresh_tenant("beatstatic")
    schedule = schedule_create_via_api(key, interval_seconds=1)
    heartbeat = state_key("beat", "heartbeat")
    state_redis().delete(heartbeat)
    with (
        BeatProcess(env={"BEAT_HEARTBEAT_SECONDS": "1"}),
        WorkerProcess(pool="threads", concurrency=2),
    ):
        beat_ran = wait_for(lambda: state_redis().hgetall(heartbeat), timeout=30, what="heartbeat")
        wait_for(lambda: _runs(tenant, schedule["id"]), timeout=30, what="the tenant's schedule")
    assert beat_ran[b"schema"] == b"public"


def _beat_metrics(port: int) -> dict[str, float]:
    """The beat's own page (METRICS_PORT): its beat_lag_seconds samples, by name and bucket."""
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    samples = {"page": 1.0 if "jobs_queue_depth" in text else 0.0}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name.startswith("beat_lag_seconds"):
                samples[sample.name + sample.labels.get("le", "")] = float(sample.value)
    return samples


def test_the_beat_serves_how_late_it_submitted_each_run(tenant_db, tmp_path):
    tenant, key = fresh_tenant("beatlag")
    port = free_port()
    # A metrics directory of its own: the other beats and workers of this run count elsewhere.
    env = {"METRICS_PORT": str(port), "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    with BeatProcess(env=env):
        schedule = schedule_create_via_api(key, interval_seconds=1)
        wait_for(lambda: len(_jobs(tenant, schedule["id"])) >= 3, timeout=30, what="3 runs")
        samples = _beat_metrics(port)
    submitted = len(_jobs(tenant, schedule["id"]))
    # One sample per run submitted (a run or two more may have come between the two reads).
    assert 3 <= samples["beat_lag_seconds_count"] <= submitted
    # On time: each within a few ticks of its due time, not a run late.
    assert samples["beat_lag_seconds_bucket5.0"] == samples["beat_lag_seconds_count"]
    assert 0 < samples["beat_lag_seconds_sum"] / samples["beat_lag_seconds_count"] < 1.0
    # The queues' depth is on the workers' pages, not also on the beat's.
    assert samples["page"] == 0.0
