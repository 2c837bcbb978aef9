"""The portal in real headless Chromium against gunicorn and a real worker process.

Each test signs in through the form, works the page as a user would, checks axe-core finds no
serious or critical violation on every page it visits, and saves a screenshot (tests/artifacts/).
A console error on any page fails the test (tests/browser.py).
"""

from __future__ import annotations

import re

import pytest

from tests.accessibility import axe_violations
from tests.browser import BrowserPage
from tests.portal_helpers import ACME, PASSWORDS

pytestmark = [pytest.mark.slow, pytest.mark.browser]

FINAL_WAIT_MS = 60_000


def sign_in(page: BrowserPage, origin: str, email: str) -> None:
    page.page.goto(f"{origin}/")
    assert "/login/" in page.page.url  # anonymous visitors land at the sign-in form
    assert_accessible(page)
    page.page.fill("#id_username", email)
    page.page.fill("#id_password", PASSWORDS[email])
    page.page.click("form button[type=submit]")
    page.page.wait_for_url(re.compile(r"/dashboard/$"))


def assert_accessible(page: BrowserPage) -> None:
    violations = axe_violations(page.page)
    assert violations == [], f"{page.page.url}: {violations}"


def mark_no_reload(page: BrowserPage) -> None:
    """A flag on the window: it survives htmx swaps and is gone after any navigation."""
    page.page.evaluate("() => { window.__sameDocument = true; }")


def assert_not_reloaded(page: BrowserPage) -> None:
    assert page.page.evaluate("() => window.__sameDocument === true"), "the page was reloaded"


def test_an_admin_signs_in_and_every_page_is_accessible(web, page):
    origin = web.origin(ACME)
    page.page.goto(f"{origin}/password/reset/")
    assert_accessible(page)
    sign_in(page, origin, "alice@acme.example")
    assert page.page.locator("h1", has_text="Dashboard").is_visible()
    # The chart library drew its canvas (vendored uPlot, served by WhiteNoise).
    page.page.locator("[data-chart=throughput] canvas").first.wait_for(state="attached")
    for path in [
        "/dashboard/", "/jobs/", "/submit/", "/submit/demo.add/", "/submit/http.request/",
        "/keys/", "/usage/", "/users/", "/password/change/",
    ]:  # fmt: skip
        response = page.page.goto(origin + path)
        assert response is not None
        assert response.status == 200, path
        assert_accessible(page)
    assert page.requests_elsewhere(origin) == []
    page.page.goto(origin + "/dashboard/")
    page.screenshot("dashboard")


def test_a_demo_add_submitted_from_the_form_reaches_succeeded_without_a_reload(
    web, page, prefork_worker
):
    origin = web.origin(ACME)
    sign_in(page, origin, "alice@acme.example")
    page.page.goto(f"{origin}/submit/demo.add/")
    page.page.fill("#arg-x", "2")
    page.page.fill("#arg-y", "40")
    page.page.fill("#arg-sleep_ms", "1500")  # long enough to be seen running first
    page.page.click("form.submit-form button[type=submit]")
    page.page.wait_for_url(re.compile(r"/jobs/[0-9a-f-]{36}/$"))
    mark_no_reload(page)
    status = page.page.locator("#job-live .status").first
    status.filter(has_text="succeeded").wait_for(timeout=FINAL_WAIT_MS)
    assert_not_reloaded(page)
    assert page.page.locator("#job-result").inner_text().strip() == "42"
    attempts = page.page.locator(".timeline .attempt")
    assert attempts.count() == 1
    assert "Attempt 1" in attempts.first.inner_text()
    assert "succeeded" in attempts.first.inner_text()
    assert_accessible(page)
    page.screenshot("demo-add-succeeded")

    # The list updates in place too: a slower job's row turns succeeded while the page stays.
    page.page.goto(f"{origin}/submit/demo.add/")
    page.page.fill("#arg-x", "1")
    page.page.fill("#arg-y", "1")
    page.page.fill("#arg-sleep_ms", "3000")
    page.page.click("form.submit-form button[type=submit]")
    page.page.wait_for_url(re.compile(r"/jobs/[0-9a-f-]{36}/$"))
    slow_id = page.page.url.rstrip("/").split("/")[-1]
    page.page.goto(f"{origin}/jobs/?type=demo.add")
    mark_no_reload(page)
    row = page.page.locator(f"tr[data-job-id='{slow_id}']")
    assert "succeeded" not in row.inner_text()
    row.locator(".status", has_text="succeeded").wait_for(timeout=FINAL_WAIT_MS)
    assert_not_reloaded(page)
    assert_accessible(page)
    page.screenshot("jobs-list-live")


def test_retrying_a_failed_demo_fail_adds_new_attempts_under_the_old_ones(
    web, page, prefork_worker
):
    # The job's final failures are logged by Celery as errors, which is what they are.
    prefork_worker.allow(r"DemoFailure\('portal boom'\)")
    origin = web.origin(ACME)
    sign_in(page, origin, "alice@acme.example")
    page.page.goto(f"{origin}/submit/demo.fail/")
    page.page.fill("#arg-message", "portal boom")
    page.page.click("form.submit-form button[type=submit]")
    page.page.wait_for_url(re.compile(r"/jobs/[0-9a-f-]{36}/$"))
    mark_no_reload(page)
    page.page.locator("#job-live > p .status", has_text="failed").wait_for(timeout=FINAL_WAIT_MS)
    assert_not_reloaded(page)
    attempts = page.page.locator(".timeline .attempt")
    first_round = attempts.count()
    assert first_round == 3, page.page.locator(".timeline").inner_text()
    assert "automatic retry" in attempts.nth(1).inner_text()
    assert "portal boom" in attempts.first.inner_text()

    page.page.click("#job-live button:has-text('Retry')")
    page.page.wait_for_url(re.compile(r"/jobs/[0-9a-f-]{36}/$"))
    assert page.page.locator(".message", has_text="queued again").is_visible()
    mark_no_reload(page)
    page.page.locator(".timeline .attempt").nth(first_round + 2).wait_for(timeout=FINAL_WAIT_MS)
    page.page.locator("#job-live > p .status", has_text="failed").wait_for(timeout=FINAL_WAIT_MS)
    assert_not_reloaded(page)
    texts = [attempts.nth(n).inner_text() for n in range(attempts.count())]
    assert len(texts) == 6
    assert [int(re.search(r"Attempt (\d+)", t).group(1)) for t in texts] == [1, 2, 3, 4, 5, 6]
    assert "retried by a user" in texts[3]
    assert all("retried by a user" not in t for t in texts[:3])
    assert_accessible(page)
    page.screenshot("demo-fail-retried")


def test_an_admin_creates_an_api_key_sees_it_once_and_revokes_it(web, page):
    origin = web.origin(ACME)
    sign_in(page, origin, "alice@acme.example")
    page.page.goto(f"{origin}/keys/")
    page.page.fill("#id_name", "browser key")
    page.page.click("form.narrow button[type=submit]")
    key_field = page.page.locator("#new-key")
    key_field.wait_for()
    plaintext = key_field.input_value()
    assert plaintext.startswith("tjp_")
    page.page.click("button[data-copy]")
    page.page.locator(".copied").filter(has_text=re.compile(".+")).wait_for()
    assert_accessible(page)
    page.screenshot("api-key-created")

    key_id = plaintext[4:14]
    row = page.page.locator(f"tr[data-key-id='{key_id}']")
    assert "active" in row.inner_text()
    row.locator("button", has_text="Revoke").click()
    page.page.wait_for_url(re.compile(r"/keys/$"))
    assert "revoked" in page.page.locator(f"tr[data-key-id='{key_id}']").inner_text()
    assert plaintext not in page.page.content()  # shown once only
    page.screenshot("api-key-revoked")


def test_a_member_sees_no_admin_links_and_is_refused_the_keys_page(web, page):
    origin = web.origin(ACME)
    sign_in(page, origin, "bob@acme.example")
    nav = page.page.locator("nav[aria-label=Main]")
    assert nav.locator("a", has_text="Jobs").is_visible()
    assert nav.locator("a", has_text="API keys").count() == 0
    assert nav.locator("a", has_text="Users").count() == 0
    response = page.page.goto(f"{origin}/keys/")
    assert response is not None
    assert response.status == 403
    assert page.page.locator("h1", has_text="Not allowed").is_visible()
    # Chromium reports every 4xx page load on the console; this refusal is the one expected,
    # and the only console error allowed.
    refusal = f"status of 403 (Forbidden) ({origin}/keys/)"
    assert [error for error in page.console_errors if refusal in error] != []
    page.console_errors[:] = [error for error in page.console_errors if refusal not in error]
    assert_accessible(page)
    page.screenshot("member-refused-keys")


def test_the_browser_refuses_a_form_the_schema_rules_out_before_sending(web, page):
    origin = web.origin(ACME)
    sign_in(page, origin, "bob@acme.example")
    page.page.goto(f"{origin}/submit/demo.add/")
    page.page.fill("#arg-x", "1")
    page.page.fill("#arg-y", "1e16")  # over the schema's maximum
    page.page.click("form.submit-form button[type=submit]")
    assert page.page.url.endswith("/submit/demo.add/")
    assert page.page.evaluate("() => document.querySelector('#arg-y').validity.rangeOverflow")
    assert page.page.evaluate("() => !document.querySelector('#arg-x').validity.valid") is False
    page.screenshot("submit-refused-in-browser")
