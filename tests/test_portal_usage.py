"""The usage page's chart: this period's jobs day by day against the plan's monthly quota, from
the same Redis counters as GET /api/v1/usage."""

from __future__ import annotations

import json
import re
from calendar import monthrange
from datetime import UTC

import pytest
from django.utils import timezone

from billing.metering import day_key, dirty_key, month_key, usage_by_day, usage_count
from billing.usage import period_bounds
from tests.portal_helpers import ACME, portal_client

pytestmark = pytest.mark.usefixtures("tenant_db")


def _chart(page: str) -> dict:
    found = re.search(r'<script id="usage-data" type="application/json">(.*?)</script>', page)
    assert found, page[:3000]
    return json.loads(found.group(1))


def _jobs_so_far(tenant_id: int, start, now) -> int:
    days = usage_by_day(
        tenant_id=tenant_id, start=start.date(), end=now.date() + timezone.timedelta(days=1)
    )
    return sum(totals.jobs for _, totals in days)


def _uncount(tenant_id: int, jobs: int, at) -> None:
    """Take back what the test counted, so acme's usage in later tests is what they made (the
    count script only adds); marked dirty, the roll-up stores the corrected day."""
    from saas_platform.lib.state_redis import state_redis

    day = at.astimezone(UTC).date()
    pipe = state_redis().pipeline()
    pipe.hincrby(day_key(tenant_id, day), "jobs", -jobs)
    pipe.hincrby(month_key(tenant_id, day), "jobs", -jobs)
    pipe.sadd(dirty_key(), f"{tenant_id}:{day.isoformat()}")
    pipe.execute()


def test_the_chart_shows_the_months_running_total_against_the_quota(actors):
    now = timezone.now()
    start, _ = period_bounds(now)
    before = _jobs_so_far(actors.acme.pk, start, now)
    usage_count(tenant_id=actors.acme.pk, jobs=7, at=now)
    try:
        page = portal_client(ACME, "alice@acme.example").get("/usage/").content.decode()
    finally:
        _uncount(actors.acme.pk, 7, now)
    assert _jobs_so_far(actors.acme.pk, start, now) == before
    chart = _chart(page)
    days_in_month = monthrange(now.year, now.month)[1]
    assert len(chart["x"]) == days_in_month
    assert chart["x"][0] == int(start.timestamp())
    so_far, quota = chart["series"]
    today = now.day - 1
    assert so_far["values"][today] == before + 7
    assert all(value is None for value in so_far["values"][today + 1 :])
    assert quota["values"] == [10_000] * days_in_month  # the free plan's monthly jobs
    assert 'data-chart="usage"' in page
    assert f"<td>{before + 7}</td>" in page  # the figures' table, for those without the chart
