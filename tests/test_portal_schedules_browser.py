"""Schedules, the usage chart and invoices in real headless Chromium against gunicorn.

As in test_portal_browser.py: signed in through the form, axe-core finds no serious or critical
violation on each page visited, a screenshot per page (tests/artifacts/), no console errors.
"""

from __future__ import annotations

import re
from datetime import date

import pytest

from billing.invoices import invoice_draft
from billing.models import Invoice
from jobs.models import Schedule
from tests.portal_helpers import ACME
from tests.test_portal_browser import assert_accessible, sign_in
from tests.test_portal_schedules import _clear

pytestmark = [pytest.mark.slow, pytest.mark.browser]


@pytest.fixture
def acme(tenant_db):
    _clear(tenant_db.acme)
    yield tenant_db.acme
    _clear(tenant_db.acme)


def test_a_schedule_is_created_in_the_browser_shows_its_next_runs_and_pauses(web, page, acme):
    origin = web.origin(ACME)
    sign_in(page, origin, "alice@acme.example")
    page.page.click("nav[aria-label=Main] a:has-text('Schedules')")
    page.page.wait_for_url(re.compile(r"/schedules/$"))
    assert_accessible(page)
    page.page.click("a:has-text('New schedule')")
    assert_accessible(page)
    page.page.click("a:has-text('demo.add')")
    page.page.wait_for_url(re.compile(r"/schedules/new/demo.add/$"))
    assert_accessible(page)
    page.page.fill("#id_schedule-name", "weekday mornings")
    page.page.fill("#id_schedule-cron", "15 9 * * mon-fri")
    page.page.fill("#id_schedule-timezone", "America/New_York")
    page.page.fill("#arg-x", "2")
    page.page.fill("#arg-y", "40")
    page.screenshot("schedule-form")
    page.page.click("form.schedule-form button[type=submit]")
    page.page.wait_for_url(re.compile(r"/schedules/\d+/$"))
    assert "At 09:15, Monday through Friday (America/New_York)" in page.page.inner_text(
        "#schedule-when"
    )
    runs = page.page.locator(".next-runs li")
    assert runs.count() == 5
    for text in runs.all_inner_texts():
        assert re.search(r"(Mon|Tue|Wed|Thu|Fri) \d{4}-\d\d-\d\d 09:15:00 E[SD]T", text), text
    assert_accessible(page)
    page.screenshot("schedule-created")

    page.page.click("button:has-text('Pause')")
    page.page.locator(".message", has_text="paused").wait_for()
    assert page.page.locator(".next-runs li").count() == 0
    assert page.page.locator("h1 .status", has_text="paused").is_visible()
    page.page.click("button:has-text('Resume')")
    page.page.locator(".message", has_text="runs again").wait_for()
    assert page.page.locator(".next-runs li").count() == 5
    page.page.goto(f"{origin}/schedules/")
    assert "weekday mornings" in page.page.inner_text("table.schedules")
    assert_accessible(page)
    page.screenshot("schedules-list")


def test_a_bad_cron_is_refused_beside_the_field_and_nothing_is_written(web, page, acme):
    origin = web.origin(ACME)
    sign_in(page, origin, "bob@acme.example")  # a member: schedules are theirs to manage too
    page.page.goto(f"{origin}/schedules/new/demo.add/")
    page.page.fill("#id_schedule-name", "never")
    page.page.fill("#id_schedule-cron", "* * 31 2 *")
    page.page.fill("#arg-x", "1")
    page.page.fill("#arg-y", "1")
    page.page.click("form.schedule-form button[type=submit]")
    error = page.page.locator("#id_schedule-cron_error")
    error.wait_for()
    assert "never occurs" in error.inner_text()
    # Chromium reports the 400 answer on the console: the one console error expected here.
    refusal = "status of 400 (Bad Request)"
    assert [e for e in page.console_errors if refusal in e] != []
    page.console_errors[:] = [e for e in page.console_errors if refusal not in e]
    with acme:
        assert not Schedule.objects.filter(name="never").exists()
    assert_accessible(page)
    page.screenshot("schedule-refused")


def test_the_usage_page_draws_its_chart_and_lists_the_invoices(web, page, tenant_db):
    invoice = invoice_draft(tenant_id=tenant_db.acme.pk, period_start=date(2003, 4, 1))
    try:
        origin = web.origin(ACME)
        sign_in(page, origin, "alice@acme.example")
        page.page.goto(f"{origin}/usage/")
        page.page.locator("[data-chart=usage] canvas").first.wait_for(state="attached")
        row = page.page.locator(f"tr[data-invoice-id='{invoice.pk}']")
        assert "2003-04" in row.inner_text()
        with page.page.expect_download() as download:
            row.locator("a", has_text="CSV").click()
        assert download.value.suggested_filename == "invoice-acme-2003-04.csv"
        assert_accessible(page)
        assert page.requests_elsewhere(origin) == []
        page.screenshot("usage-chart")
    finally:
        Invoice.objects.filter(pk=invoice.pk).delete()
