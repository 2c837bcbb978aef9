"""A schedule's Sentry Crons monitor over the API (`monitor_slug`), which schedules may have one,
and what Sentry is told about the monitor (jobs.schedules.monitors)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from jobs.models import Schedule
from jobs.schedules.monitors import monitor_config, sentry_slug
from jobs.schedules.services import schedule_delete
from tests.api_client import call
from tests.schedule_helpers import fresh_tenant, schedule_post


@pytest.fixture
def ent(tenant_db):
    """An enterprise tenant (slug `schedmon`) with a key, its schedules removed."""
    return fresh_tenant("schedmon")


def test_a_schedule_has_no_monitor_unless_given_one_and_can_drop_it(ent):
    tenant, key = ent
    plain = schedule_post(key, name="plain", cron="0 * * * *")
    assert (plain.status, plain.body["monitor_slug"]) == (201, "")
    watched = schedule_post(key, name="watched", cron="30 2 * * *", monitor_slug="nightly-report")
    assert (watched.status, watched.body["monitor_slug"]) == (201, "nightly-report")
    path = f"/schedules/{watched.body['id']}"
    assert call("GET", path, key=key).body["monitor_slug"] == "nightly-report"
    with tenant:
        assert Schedule.objects.get(pk=watched.body["id"]).monitor_slug == "nightly-report"
    # A PATCH that leaves it out keeps it; "" removes it.
    kept = call("PATCH", path, key=key, body={"name": "watched still"})
    assert kept.body["monitor_slug"] == "nightly-report"
    dropped = call("PATCH", path, key=key, body={"monitor_slug": ""})
    assert (dropped.status, dropped.body["monitor_slug"]) == (200, "")


@pytest.mark.parametrize(
    ("body", "code"),
    [
        # Sentry Crons has no schedule for these.
        ({"run_at": (datetime.now(UTC) + timedelta(days=1)).isoformat()}, "invalid_monitor"),
        ({"interval_seconds": 90}, "invalid_monitor"),
        # Celery reads day of month AND day of week; a standard cron, Sentry's, either.
        ({"cron": "0 0 1 * mon"}, "invalid_monitor"),
        # Sentry's 50 characters, less the tenant's "schedmon-".
        ({"cron": "0 * * * *", "monitor_slug": "m" * 42}, "invalid_monitor"),
        # What Sentry would slugify into something else.
        ({"cron": "0 * * * *", "monitor_slug": "Nightly"}, "invalid_request"),
        ({"cron": "0 * * * *", "monitor_slug": "-x"}, "invalid_request"),
        ({"cron": "0 * * * *", "monitor_slug": "a b"}, "invalid_request"),
    ],
)
def test_a_monitor_the_schedule_cannot_report_to_is_refused(ent, body, code):
    tenant, key = ent
    answer = schedule_post(key, **{"monitor_slug": "watched", **body})
    assert (answer.status, answer.error_code) == (422, code), answer.body
    with tenant:
        assert not Schedule.objects.exists()


def test_the_longest_slug_that_fits_beside_the_tenants_is_accepted(ent):
    _, key = ent
    longest = "m" * (50 - len("schedmon-"))
    answer = schedule_post(key, cron="0 * * * *", monitor_slug=longest)
    assert answer.status == 201, answer.body
    assert len(sentry_slug("schedmon", longest)) == 50


def test_a_monitor_is_one_schedules_per_tenant_but_every_tenant_has_its_own(ent, tenant_db):
    _, key = ent
    assert schedule_post(key, name="a", cron="0 * * * *", monitor_slug="hourly").status == 201
    again = schedule_post(key, name="b", cron="5 * * * *", monitor_slug="hourly")
    assert (again.status, again.error_code) == (422, "monitor_taken")
    other = schedule_post(key, name="b", cron="5 * * * *").body
    taken = call("PATCH", f"/schedules/{other['id']}", key=key, body={"monitor_slug": "hourly"})
    assert (taken.status, taken.error_code) == (422, "monitor_taken")
    # Sentry sees "<tenant>-<slug>": acme's "hourly" is another monitor, so acme may have one.
    with tenant_db.acme:
        for schedule in Schedule.objects.select_related("periodic_task"):
            schedule_delete(schedule=schedule)
    acme = schedule_post(tenant_db.acme_key, name="a", cron="0 * * * *", monitor_slug="hourly")
    assert acme.status == 201, acme.body
    assert sentry_slug("acme", "hourly") != sentry_slug("schedmon", "hourly")
    with tenant_db.acme:
        schedule_delete(schedule=Schedule.objects.get(pk=acme.body["id"]))


def test_a_patch_to_a_timing_sentry_cannot_follow_needs_the_monitor_dropped(ent):
    _, key = ent
    created = schedule_post(key, interval_seconds=120, monitor_slug="every-two").body
    path = f"/schedules/{created['id']}"
    refused = call("PATCH", path, key=key, body={"interval_seconds": 30})
    assert (refused.status, refused.error_code) == (422, "invalid_monitor")
    assert call("GET", path, key=key).body["interval_seconds"] == 120
    both = call("PATCH", path, key=key, body={"interval_seconds": 30, "monitor_slug": ""})
    assert (both.status, both.body["interval_seconds"]) == (200, 30)


def test_sentry_is_told_the_schedule_its_zone_and_margins(ent):
    tenant, key = ent
    cron = schedule_post(
        key, name="c", cron="30 2 * * 1-5", timezone="Europe/Berlin", jitter_seconds=90,
        monitor_slug="weekdays",
    ).body  # fmt: skip
    interval = schedule_post(
        key, name="i", type="demo.fail", args={"message": "m"}, interval_seconds=300,
        monitor_slug="five",
    ).body  # fmt: skip
    with tenant:
        by_cron = monitor_config(Schedule.objects.get(pk=cron["id"]))
        by_interval = monitor_config(Schedule.objects.get(pk=interval["id"]))
    assert by_cron == {
        "schedule": {"type": "crontab", "value": "30 2 * * 1-5"},
        "timezone": "Europe/Berlin",
        # 2 minutes for the beat and the queue, and 2 for up to 90 s of jitter.
        "checkin_margin": 4,
        # demo.add: 3 attempts of at most 120 s, and backoffs of 2 and 4 s.
        "max_runtime": 7,
    }
    assert by_interval["schedule"] == {"type": "interval", "value": 5, "unit": "minute"}
    assert (by_interval["timezone"], by_interval["checkin_margin"]) == ("UTC", 2)
