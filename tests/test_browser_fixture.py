"""The browser-test plumbing itself (tests/browser.py): what makes a browser test fail or skip."""

from __future__ import annotations

import pytest

from tests import browser as browser_module
from tests.browser import browser_page, chromium, unavailable


def test_a_browser_test_that_cannot_run_fails_under_ci(monkeypatch):
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI is set"):
        unavailable("no chromium")


def test_without_ci_a_browser_test_that_cannot_run_skips_saying_why(monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="no chromium"):
        unavailable("no chromium")


def test_a_missing_chromium_fails_under_ci(monkeypatch, tmp_path):
    monkeypatch.setenv("CI", "true")
    monkeypatch.setattr(browser_module, "CHROMIUM", str(tmp_path / "chromium"))
    with pytest.raises(pytest.fail.Exception, match="chromium is missing"), chromium():
        pass


@pytest.mark.browser
def test_a_console_error_fails_the_test(browser):
    with (
        pytest.raises(pytest.fail.Exception, match="console errors:\nsomething broke"),
        browser_page(browser, "console") as page,
    ):
        page.page.set_content("<script>console.error('something broke')</script>")


@pytest.mark.browser
def test_a_request_to_another_host_is_recorded_and_never_leaves_the_machine(browser):
    with (
        pytest.raises(pytest.fail.Exception, match="ERR_BLOCKED_BY_CLIENT"),
        browser_page(browser, "elsewhere") as page,
    ):
        page.page.set_content('<img src="https://cdn.invalid/logo.png">')
    assert page.requests_elsewhere("http://localhost:8000") == ["https://cdn.invalid/logo.png"]
