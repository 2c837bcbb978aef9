"""The portal's schedules pages through Django's test client on the tenants' hosts: create,
edit, pause, resume, delete through jobs.schedules.services, next runs in the schedule's zone,
a schedule's runs, bad input refused beside its field, members, and globex's ids (404)."""

from __future__ import annotations

import re
from datetime import timedelta
from zoneinfo import ZoneInfo

import pytest
from django.utils import timezone
from django_celery_beat.models import PeriodicTask

from jobs.models import Schedule, ScheduleRun
from jobs.schedules.services import ScheduleSpec, schedule_create, schedule_delete
from tests.jobs_helpers import queued_job
from tests.portal_helpers import ACME, portal_client
from tests.schedule_helpers import tenant_zone


def _clear(tenant) -> None:
    with tenant:
        for schedule in Schedule.objects.select_related("periodic_task"):
            schedule_delete(schedule=schedule)


@pytest.fixture
def acme(tenant_db):
    """acme (free plan: 5 schedules, 300 s apart) without schedules, before and after."""
    _clear(tenant_db.acme)
    yield tenant_db.acme
    _clear(tenant_db.acme)


def _form(**changes: str) -> dict[str, str]:
    data = {
        "schedule-name": "nightly sums",
        "schedule-timing": "cron",
        "schedule-cron": "30 2 * * *",
        "schedule-interval_seconds": "",
        "schedule-run_at": "",
        "schedule-timezone": "Europe/Berlin",
        "schedule-enabled": "on",
        "schedule-missed_runs": "run_once",
        "schedule-catch_up_seconds": "3600",
        "schedule-overlap": "allow",
        "schedule-jitter_seconds": "0",
        "x": "2",
        "y": "3",
    }
    data.update(changes)
    return {name: value for name, value in data.items() if value is not None}


def _counts(tenant) -> tuple[int, int]:
    with tenant:
        return Schedule.objects.count(), PeriodicTask.objects.count()


def test_a_cron_schedule_is_created_and_shows_its_description_and_next_five_runs(acme):
    client = portal_client(ACME, "alice@acme.example")
    response = client.post("/schedules/new/demo.add/", _form())
    assert response.status_code == 302, response.content.decode()[:3000]
    with acme:
        schedule = Schedule.objects.get(name="nightly sums")
        assert schedule.args == {"x": 2, "y": 3}
        assert schedule.timezone == "Europe/Berlin"
        assert schedule.periodic_task.enabled
    assert response["Location"] == f"/schedules/{schedule.pk}/"
    page = client.get(response["Location"]).content.decode()
    assert "At 02:30 (Europe/Berlin)" in page
    runs = re.findall(r'<time datetime="([^"]+)">', page)
    assert len(runs) == 5
    berlin = ZoneInfo("Europe/Berlin")
    for text in runs:
        when = timezone.datetime.fromisoformat(text)
        assert when.utcoffset() == when.astimezone(berlin).utcoffset()  # in the schedule's zone
        assert (when.hour, when.minute) in ((2, 30), (3, 0))  # 03:00 only on a DST gap day
    listing = client.get("/schedules/").content.decode()
    assert "nightly sums" in listing
    assert "At 02:30 (Europe/Berlin)" in listing


def test_interval_and_one_off_schedules_are_created_too(acme):
    client = portal_client(ACME, "alice@acme.example")
    every = client.post(
        "/schedules/new/demo.add/",
        _form(**{"schedule-name": "every", "schedule-timing": "interval",
                 "schedule-interval_seconds": "900", "schedule-cron": ""}),
    )  # fmt: skip
    assert every.status_code == 302
    assert "Every 15 minutes" in client.get(every["Location"]).content.decode()
    tomorrow = (timezone.now() + timedelta(days=1)).astimezone(ZoneInfo("Asia/Tokyo"))
    once = client.post(
        "/schedules/new/demo.add/",
        _form(**{"schedule-name": "once", "schedule-timing": "once",
                 "schedule-run_at": tomorrow.strftime("%Y-%m-%dT%H:%M"),
                 "schedule-timezone": "Asia/Tokyo"}),
    )  # fmt: skip
    assert once.status_code == 302, once.content.decode()[:3000]
    with acme:
        task = Schedule.objects.get(name="once").periodic_task
        # The wall time typed, read in the schedule's zone.
        assert task.clocked.clocked_time == tomorrow.replace(second=0, microsecond=0)


@pytest.mark.parametrize(
    ("changes", "field", "message"),
    [
        ({"schedule-cron": "61 * * * *"}, "schedule-cron", "Invalid cron expression"),
        ({"schedule-cron": "* * 31 2 *"}, "schedule-cron", "never occurs"),
        ({"schedule-cron": ""}, "schedule-cron", "Required for this kind of timing"),
        # The free plan runs a schedule at most every 300 s.
        ({"schedule-cron": "* * * * *"}, "schedule-cron", "at most every 300 s"),
        ({"schedule-timing": "interval", "schedule-interval_seconds": "60"},
         "schedule-interval_seconds", "at most every 300 s"),
        ({"schedule-timezone": "Mars/Olympus"}, "schedule-timezone", "Unknown time zone"),
        ({"schedule-name": ""}, "schedule-name", "This field is required"),
        ({"schedule-jitter_seconds": "99999"}, "schedule-jitter_seconds", "less than or equal"),
        ({"schedule-overlap": "sometimes"}, "schedule-overlap", "Select a valid choice"),
        ({"x": "abc"}, "arg-x", "Enter a number"),
        ({"y": None}, "arg-y", "This field is required"),
        ({"y": "1e16"}, "arg-y", "greater than the maximum"),
    ],
)  # fmt: skip
def test_bad_input_is_refused_beside_its_field_and_writes_nothing(acme, changes, field, message):
    client = portal_client(ACME, "alice@acme.example")
    before = _counts(acme)
    response = client.post("/schedules/new/demo.add/", _form(**changes))
    assert response.status_code == 400
    page = response.content.decode()
    error_id = f"{field}-error" if field.startswith("arg-") else f"id_{field}_error"
    found = re.search(rf'id="{re.escape(error_id)}">([^<]*)<', page)
    assert found, page[:4000]
    assert message in found.group(1)
    assert _counts(acme) == before


def test_a_taken_name_and_the_plans_schedule_count_are_refused_with_a_message(acme):
    client = portal_client(ACME, "alice@acme.example")
    assert client.post("/schedules/new/demo.add/", _form()).status_code == 302
    taken = client.post("/schedules/new/demo.add/", _form())
    assert taken.status_code == 400
    assert re.search(r'id="id_schedule-name_error">Another schedule', taken.content.decode())
    for n in range(4):
        assert (
            client.post("/schedules/new/demo.add/", _form(**{"schedule-name": f"s{n}"})).status_code
            == 302
        )
    before = _counts(acme)
    sixth = client.post("/schedules/new/demo.add/", _form(**{"schedule-name": "sixth"}))
    assert sixth.status_code == 400
    assert "The free plan allows 5 schedules." in sixth.content.decode()
    assert _counts(acme) == before


def _schedule(tenant, **fields) -> Schedule:
    spec = ScheduleSpec(
        **{"name": "hourly", "type": "demo.add", "args": {"x": 1, "y": 2}, "cron": "0 * * * *",
           **fields}
    )  # fmt: skip
    with tenant:
        return schedule_create(spec=spec)


def test_edit_pause_resume_and_delete_go_through_the_service(acme):
    schedule = _schedule(acme)
    client = portal_client(ACME, "bob@acme.example")  # a member may: they submit jobs
    form = client.get(f"/schedules/{schedule.pk}/edit/").content.decode()
    assert 'value="0 * * * *"' in form
    assert 'value="hourly"' in form
    saved = client.post(
        f"/schedules/{schedule.pk}/edit/",
        _form(**{"schedule-name": "hourly", "schedule-cron": "15 */2 * * *",
                 "schedule-timezone": "UTC", "x": "7"}),
    )  # fmt: skip
    assert saved.status_code == 302, saved.content.decode()[:3000]
    with acme:
        stored = Schedule.objects.select_related("periodic_task__crontab").get(pk=schedule.pk)
        assert stored.args == {"x": 7, "y": 3}
        assert (stored.periodic_task.crontab.minute, stored.periodic_task.crontab.hour) == (
            "15", "*/2",
        )  # fmt: skip

    paused = client.post(f"/schedules/{schedule.pk}/pause/", follow=True).content.decode()
    assert "The schedule is paused" in paused
    assert "Paused: no runs until it is resumed." in paused
    with acme:
        assert not PeriodicTask.objects.get(pk=schedule.periodic_task_id).enabled
    resumed = client.post(f"/schedules/{schedule.pk}/resume/", follow=True).content.decode()
    assert "runs again from now on" in resumed
    assert len(re.findall(r'<time datetime="', resumed)) == 5
    with acme:
        assert PeriodicTask.objects.get(pk=schedule.periodic_task_id).enabled

    assert client.get(f"/schedules/{schedule.pk}/pause/").status_code == 405  # POST only
    deleted = client.post(f"/schedules/{schedule.pk}/delete/", follow=True).content.decode()
    assert "was deleted" in deleted
    assert _counts(acme) == (0, 0)


def test_a_bad_edit_is_refused_beside_the_field_and_changes_nothing(acme):
    schedule = _schedule(acme)
    client = portal_client(ACME, "alice@acme.example")
    response = client.post(
        f"/schedules/{schedule.pk}/edit/",
        _form(**{"schedule-name": "renamed", "schedule-cron": "not a cron"}),
    )
    assert response.status_code == 400
    assert 'id="id_schedule-cron_error"' in response.content.decode()
    with acme:
        stored = Schedule.objects.get(pk=schedule.pk)
        assert (stored.name, stored.periodic_task.crontab.minute) == ("hourly", "0")


def test_a_schedules_runs_list_its_jobs(acme):
    schedule = _schedule(acme)
    job = queued_job(acme, "demo.add", {"x": 1, "y": 2}, schedule_id=schedule.pk)
    with acme:
        ScheduleRun.objects.create(
            schedule=schedule, due_at=timezone.now(), outcome="submitted", job=job
        )
        ScheduleRun.objects.create(
            schedule=schedule, due_at=timezone.now() - timedelta(hours=1), outcome="failed",
            error="demo.add refused its arguments",
        )  # fmt: skip
    page = portal_client(ACME, "alice@acme.example").get(f"/schedules/{schedule.pk}/")
    text = page.content.decode()
    assert f'href="/jobs/{job.id}/"' in text
    assert "demo.add refused its arguments" in text
    assert f'href="/jobs/?schedule={schedule.pk}"' in text
    jobs = portal_client(ACME, "alice@acme.example").get(f"/jobs/?schedule={schedule.pk}")
    assert str(job.id) in jobs.content.decode()


def test_a_member_sees_the_schedules_link_and_pages(acme):
    client = portal_client(ACME, "bob@acme.example")
    assert 'href="/schedules/"' in client.get("/dashboard/").content.decode()
    for path in ["/schedules/", "/schedules/new/", "/schedules/new/demo.add/"]:
        assert client.get(path).status_code == 200, path
    assert client.post("/schedules/new/demo.add/", _form()).status_code == 302


def test_globex_schedules_are_404_on_acme_and_their_forms_change_nothing(acme, tenant_db):
    globex = tenant_db.globex
    _clear(globex)
    theirs = _schedule(globex, name="globex secret")
    client = portal_client(ACME, "alice@acme.example")
    for path in [f"/schedules/{theirs.pk}/", f"/schedules/{theirs.pk}/edit/", "/schedules/x/"]:
        assert client.get(path).status_code == 404, path
    for path in [
        f"/schedules/{theirs.pk}/edit/",
        f"/schedules/{theirs.pk}/pause/",
        f"/schedules/{theirs.pk}/resume/",
        f"/schedules/{theirs.pk}/delete/",
    ]:
        assert client.post(path, _form(**{"schedule-name": "hijacked"})).status_code == 404, path
    with globex:
        stored = Schedule.objects.select_related("periodic_task").get(pk=theirs.pk)
        assert (stored.name, stored.periodic_task.enabled) == ("globex secret", True)
    assert "globex secret" not in client.get("/schedules/").content.decode()
    _clear(globex)


def test_anonymous_visitors_are_sent_to_sign_in():
    response = portal_client(ACME).get("/schedules/")
    assert response.status_code == 302
    assert "/login/" in response["Location"]


def test_a_new_schedules_zone_is_the_tenants_and_the_page_offers_every_zone(acme):
    client = portal_client(ACME, "alice@acme.example")
    with tenant_zone(acme, "America/Sao_Paulo"):
        page = client.get("/schedules/new/demo.add/").content.decode()
    field = re.search(r'<input[^>]*name="schedule-timezone"[^>]*>', page)
    assert field, page[:3000]
    assert 'value="America/Sao_Paulo"' in field.group(0)
    assert 'list="time-zones"' in field.group(0)
    datalist = re.search(r'<datalist id="time-zones">(.*?)</datalist>', page, re.S)
    assert datalist
    offered = re.findall(r'<option value="([^"]+)">', datalist.group(1))
    assert {"UTC", "Europe/Berlin", "America/Sao_Paulo"} <= set(offered)
    assert offered == sorted(offered)
