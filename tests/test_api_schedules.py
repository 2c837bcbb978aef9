"""GET/POST /api/v1/schedules and GET/PATCH/DELETE /api/v1/schedules/{id}: the document, its
validation (as a submission's), the plan's limits, and tenants kept apart."""

from __future__ import annotations

import itertools
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from celery.schedules import crontab
from django.utils import timezone
from django_celery_beat.models import PeriodicTask

from jobs.models import Schedule
from jobs.schedules.changes import changed_tenants_pop
from jobs.schedules.services import schedule_delete
from tests.api_client import call
from tests.schedule_helpers import fresh_tenant, schedule_post, tenant_zone


@pytest.fixture
def ent(tenant_db):
    """An enterprise tenant (1 s intervals, many schedules) with a key, its schedules removed."""
    return fresh_tenant("schedapi")


def _count(tenant) -> tuple[int, int]:
    with tenant:
        return Schedule.objects.count(), PeriodicTask.objects.count()


def test_a_schedule_without_a_time_zone_is_in_the_tenants_own(ent):
    tenant, key = ent
    with tenant_zone(tenant, "Asia/Tokyo"):
        answer = schedule_post(key, name="tokyo", cron="0 9 * * *")
    assert answer.status == 201, answer.body
    assert answer.body["timezone"] == "Asia/Tokyo"
    first = datetime.fromisoformat(answer.body["next_runs"][0])
    assert (first.hour, first.utcoffset()) == (9, timedelta(hours=9))
    # A zone given is kept, whatever the tenant's.
    with tenant_zone(tenant, "Asia/Tokyo"):
        assert (
            schedule_post(key, name="utc", cron="0 9 * * *", timezone="UTC").body["timezone"]
            == "UTC"
        )


def test_it_creates_a_cron_schedule_in_the_contracts_shape(ent):
    tenant, key = ent
    answer = schedule_post(key, name="nightly", cron="30 2 * * *", timezone="Europe/Berlin")
    assert answer.status == 201, answer.body
    body = answer.body
    assert set(body) >= {
        "id", "name", "type", "args", "cron", "timezone", "enabled", "next_runs", "last_run_at",
        "last_job",
    }  # fmt: skip
    assert (body["cron"], body["timezone"], body["enabled"]) == (
        "30 2 * * *", "Europe/Berlin", True,
    )  # fmt: skip
    assert (body["last_run_at"], body["last_job"]) == (None, None)
    runs = [datetime.fromisoformat(when) for when in body["next_runs"]]
    assert len(runs) == 5
    berlin = ZoneInfo("Europe/Berlin")
    for when in runs:
        local = when.astimezone(berlin)
        # Shown in the schedule's zone, with its offset.
        assert when.utcoffset() == local.utcoffset()
        assert (local.hour, local.minute) == (2, 30) or (local.hour, local.minute) == (3, 0)
    # Stored on django-celery-beat's models, in the tenant's schema.
    with tenant:
        task = PeriodicTask.objects.get(job_schedule__id=body["id"])
        assert str(task.crontab.timezone) == "Europe/Berlin"
    assert tenant.pk in changed_tenants_pop()
    again = call("GET", f"/schedules/{body['id']}", key=key)
    assert (again.status, again.body["next_runs"]) == (200, body["next_runs"])
    listed = call("GET", "/schedules", key=key)
    assert [item["id"] for item in listed.body["items"]] == [body["id"]]


# Every crontab of the seed's table, as a cron expression, beside the crontab(...) it stands for.
SEED_TABLE = [
    ("* * * * *", {}),
    ("0 0 * * *", {"minute": 0, "hour": 0}),
    ("0 */3 * * *", {"minute": 0, "hour": "*/3"}),
    ("0 0,3,6,9,12,15,18,21 * * *", {"minute": 0, "hour": "0,3,6,9,12,15,18,21"}),
    ("*/15 * * * *", {"minute": "*/15"}),
    ("* * * * sunday", {"day_of_week": "sunday"}),
    ("* * * * sun", {"minute": "*", "hour": "*", "day_of_week": "sun"}),
    ("*/10 3,17,22 * * thu,fri", {"minute": "*/10", "hour": "3,17,22", "day_of_week": "thu,fri"}),
    ("0 */2,*/3 * * *", {"minute": 0, "hour": "*/2,*/3"}),
    ("0 */5 * * *", {"minute": 0, "hour": "*/5"}),
    ("0 */3,8-17 * * *", {"minute": 0, "hour": "*/3,8-17"}),
    ("0 0 2 * *", {"minute": 0, "hour": 0, "day_of_month": "2"}),
    ("0 0 2-30/2 * *", {"minute": 0, "hour": 0, "day_of_month": "2-30/2"}),
    ("0 0 1-7,15-21 * *", {"minute": 0, "hour": 0, "day_of_month": "1-7,15-21"}),
    ("0 0 11 5 *", {"minute": 0, "hour": 0, "day_of_month": "11", "month_of_year": "5"}),
    ("0 0 * */3 *", {"minute": 0, "hour": 0, "month_of_year": "*/3"}),
]


def _celery_next(fields: dict, after: datetime, count: int) -> list[datetime]:
    """What Celery's own beat computes, step by step, in UTC (the schedule's zone here)."""
    schedule = crontab(**{name: str(value) for name, value in fields.items()})
    found, cursor = [], after
    for _ in range(count):
        start, delta, _now = schedule.remaining_delta(cursor, tz=ZoneInfo("UTC"))
        cursor = start + delta
        found.append(cursor)
    return found


@pytest.mark.parametrize(("expression", "fields"), SEED_TABLE, ids=[e for e, _ in SEED_TABLE])
def test_every_cron_form_of_the_seed_is_accepted_and_previewed_as_celery_runs_it(
    ent, expression, fields
):
    tenant, key = ent
    answer = schedule_post(key, name=f"seed {expression}", cron=expression)
    assert answer.status == 201, answer.body
    shown = [datetime.fromisoformat(when) for when in answer.body["next_runs"]]
    assert len(shown) == 5
    with tenant:
        created = Schedule.objects.get(pk=answer.body["id"]).last_due_at
    assert shown == _celery_next(fields, created, 5)


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"cron": "* * 31 2 *"}, "invalid_timing"),
        ({"cron": "61 * * * *"}, "invalid_timing"),
        ({"cron": "* * * *"}, "invalid_timing"),
        ({"cron": "* * * * *", "interval_seconds": 60}, "invalid_timing"),
        ({}, "invalid_timing"),
        ({"cron": "* * * * *", "timezone": "Mars/Olympus"}, "invalid_timing"),
        ({"cron": "* * * * *", "type": "nope.nope"}, "unknown_job_type"),
        ({"cron": "* * * * *", "args": {"x": 1}}, "invalid_args"),
        ({"cron": "* * * * *", "queue": "fast"}, "invalid_request"),
        ({"interval_seconds": 0}, "invalid_request"),
        ({"interval_seconds": "5"}, "invalid_request"),
        ({"run_at": "2030-01-01T00:00:00"}, "invalid_timing"),
        ({"interval_seconds": 5, "overlap": "sometimes"}, "invalid_request"),
    ],
)
def test_it_refuses_bad_schedules_with_422_and_writes_nothing(ent, body, code):
    tenant, key = ent
    before = _count(tenant)
    answer = schedule_post(key, **body)
    assert (answer.status, answer.error_code) == (422, code), answer.body
    assert _count(tenant) == before


def test_a_name_is_unique_per_tenant(ent):
    tenant, key = ent
    assert schedule_post(key, name="twice", interval_seconds=5).status == 201
    answer = schedule_post(key, name="twice", interval_seconds=5)
    assert (answer.status, answer.error_code) == (422, "name_taken")
    assert _count(tenant)[0] == 1


def test_the_plans_minimum_interval_and_maximum_count_are_422(tenant_db):
    # acme is on the free plan: 5 schedules, every 300 s at most.
    key = tenant_db.acme_key
    with tenant_db.acme:
        for schedule in Schedule.objects.select_related("periodic_task"):
            schedule_delete(schedule=schedule)  # both rows, as the API does
    short = schedule_post(key, name="fast", interval_seconds=60)
    assert (short.status, short.error_code) == (422, "interval_too_short")
    assert short.body["error"]["details"]["min_interval_seconds"] == 300
    every_minute = schedule_post(key, name="cron fast", cron="* * * * *")
    assert (every_minute.status, every_minute.error_code) == (422, "interval_too_short")
    for n in range(5):
        assert schedule_post(key, name=f"ok {n}", interval_seconds=300).status == 201
    sixth = schedule_post(key, name="sixth", interval_seconds=300)
    assert (sixth.status, sixth.error_code) == (422, "too_many_schedules")
    assert _count(tenant_db.acme)[0] == 5


def test_enterprise_allows_one_second_intervals(ent):
    _, key = ent
    answer = schedule_post(key, interval_seconds=1)
    assert answer.status == 201
    runs = [datetime.fromisoformat(when) for when in answer.body["next_runs"]]
    assert [(b - a).total_seconds() for a, b in itertools.pairwise(runs)] == [1.0] * 4


def test_patch_changes_only_what_it_names_and_retimes_from_now(ent):
    _, key = ent
    created = schedule_post(key, name="p", cron="0 * * * *").body
    paused = call("PATCH", f"/schedules/{created['id']}", key=key, body={"enabled": False})
    assert paused.status == 200
    assert (paused.body["enabled"], paused.body["next_runs"], paused.body["cron"]) == (
        False, [], "0 * * * *",
    )  # fmt: skip
    moved = call(
        "PATCH", f"/schedules/{created['id']}", key=key,
        body={"timezone": "Asia/Kolkata", "enabled": True},
    )  # fmt: skip
    assert moved.status == 200
    first = datetime.fromisoformat(moved.body["next_runs"][0])
    # Every hour on the hour in Kolkata (+05:30) is half past in UTC.
    assert (first.utcoffset(), first.minute) == (timedelta(hours=5, minutes=30), 0)
    switched = call("PATCH", f"/schedules/{created['id']}", key=key, body={"interval_seconds": 30})
    assert switched.status == 200
    assert (switched.body["cron"], switched.body["interval_seconds"]) == (None, 30)
    refused = call("PATCH", f"/schedules/{created['id']}", key=key, body={"cron": "* * 30 2 *"})
    assert (refused.status, refused.error_code) == (422, "invalid_timing")
    assert call("GET", f"/schedules/{created['id']}", key=key).body["interval_seconds"] == 30


def test_delete_removes_the_schedule_and_its_periodic_task(ent):
    tenant, key = ent
    created = schedule_post(key, name="d", interval_seconds=10).body
    assert call("DELETE", f"/schedules/{created['id']}", key=key).status == 204
    assert _count(tenant) == (0, 0)
    assert call("GET", f"/schedules/{created['id']}", key=key).status == 404


def test_globex_cannot_read_list_change_or_delete_acmes_schedules(tenant_db):
    with tenant_db.acme:
        for schedule in Schedule.objects.select_related("periodic_task"):
            schedule_delete(schedule=schedule)  # both rows, as the API does
    mine = schedule_post(tenant_db.acme_key, name="acme's", interval_seconds=300).body
    path = f"/schedules/{mine['id']}"
    other = tenant_db.globex_key
    assert call("GET", path, key=other).status == 404
    assert mine["id"] not in [s["id"] for s in call("GET", "/schedules", key=other).body["items"]]
    assert call("PATCH", path, key=other, body={"enabled": False}).status == 404
    assert call("DELETE", path, key=other).status == 404
    still = call("GET", path, key=tenant_db.acme_key)
    assert (still.status, still.body["enabled"]) == (200, True)


def test_scopes_are_required(tenant_db):
    from tenants.services import apikey_create

    read_only = apikey_create(tenant=tenant_db.acme, scopes=["schedules:read"]).plaintext
    jobs_only = apikey_create(tenant=tenant_db.acme, scopes=["jobs:read"]).plaintext
    assert call("GET", "/schedules", key=read_only).status == 200
    assert schedule_post(read_only, interval_seconds=300).error_code == "insufficient_scope"
    assert call("GET", "/schedules", key=jobs_only).error_code == "insufficient_scope"


def test_a_run_at_schedule_previews_its_one_time(ent):
    _, key = ent
    when = (timezone.now() + timedelta(hours=1)).replace(microsecond=0)
    answer = schedule_post(key, run_at=when.isoformat(), timezone="America/New_York")
    assert answer.status == 201
    assert [datetime.fromisoformat(w) for w in answer.body["next_runs"]] == [when]
