"""Headless Chromium for browser tests: Debian's chromium, driven by the `playwright` package.

Playwright's own browser builds cannot be downloaded here, so never run `playwright install`;
`make test` installs Debian's chromium (tests/install_chromium.sh). A test that cannot get a
browser skips with the reason, except under CI, where that is a failure.

Every page records its requests and console errors. Requests to hosts other than loopback are
aborted (tests never reach the network) and still recorded, so a test can assert that a page
loads nothing from elsewhere; a console error or an uncaught page error fails the test.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn
from urllib.parse import urlsplit

import pytest

if TYPE_CHECKING:
    from playwright.sync_api import Browser, ConsoleMessage, Page, Request, Route

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
_LOOPBACK_HOST = re.compile(r"^(localhost|.+\.localhost|127\.\d+\.\d+\.\d+|::1)$")


def unavailable(reason: str) -> NoReturn:
    """A browser test that cannot run: a failure under CI, a skip elsewhere."""
    if os.environ.get("CI"):
        pytest.fail(f"browser tests cannot run (CI is set, so this fails): {reason}", pytrace=False)
    pytest.skip(f"browser tests cannot run: {reason}")


@contextmanager
def _django_beside_playwright() -> Iterator[None]:
    """Playwright's sync API leaves this thread's asyncio loop marked as running between its
    calls, though no coroutine of ours runs. Django takes that for async code:

    1. it refuses ORM calls (SynchronousOnlyOperation), so it is told they are safe here;
    2. it keeps database connections per asyncio context then, not per thread: the ORM gets a
       second connection while the browser lives, closed here before the mark goes away (left
       open, it would stop the test database from being dropped at the end of the run).
    """
    from django.db import connections

    previous = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    try:
        yield
    finally:
        connections.close_all()
        if previous is None:
            os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
        else:
            os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = previous


@contextmanager
def chromium() -> Iterator[Browser]:
    """Debian's chromium under Playwright, closed at the end."""
    try:
        from playwright.sync_api import Error, sync_playwright
    except ImportError as exc:
        unavailable(f"the playwright package is not installed ({exc}); run make install")
    if not os.access(CHROMIUM, os.X_OK):
        unavailable(f"{CHROMIUM} is missing; make test installs it with apt-get when run as root")
    playwright = sync_playwright().start()
    try:
        with _django_beside_playwright():
            try:
                browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            except Error as exc:
                unavailable(f"{CHROMIUM} did not start: {exc}")
            try:
                yield browser
            finally:
                browser.close()
    finally:
        playwright.stop()


@dataclass
class BrowserPage:
    """A page in a fresh browser context, with what it asked for and what it complained of."""

    page: Page
    name: str
    requests: list[str] = field(default_factory=list)
    console_errors: list[str] = field(default_factory=list)

    def requests_elsewhere(self, origin: str) -> list[str]:
        """Every requested URL not on `origin` (scheme://host:port)."""
        return [url for url in self.requests if not url.startswith(origin + "/")]

    def screenshot(self, label: str) -> Path:
        """A full-page PNG in tests/artifacts/, named after the test and `label`."""
        ARTIFACTS.mkdir(exist_ok=True)
        path = ARTIFACTS / f"{re.sub(r'[^A-Za-z0-9_.-]+', '_', self.name)}-{label}.png"
        self.page.screenshot(path=str(path), full_page=True)
        print(f"screenshot: {path}")  # shown with -s, and in the output of a failure
        return path


def _is_loopback(url: str) -> bool:
    parts = urlsplit(url)
    if parts.scheme in ("data", "blob", "about"):
        return True
    return parts.scheme in ("http", "https") and bool(_LOOPBACK_HOST.match(parts.hostname or ""))


@contextmanager
def browser_page(browser: Browser, name: str) -> Iterator[BrowserPage]:
    """A page that records requests and console errors; fails the test on a console error."""
    context = browser.new_context(color_scheme="light", viewport={"width": 1280, "height": 900})
    page = context.new_page()
    recorded = BrowserPage(page=page, name=name)

    def on_request(request: Request) -> None:
        recorded.requests.append(request.url)

    def on_console(message: ConsoleMessage) -> None:
        if message.type == "error":
            location = message.location
            recorded.console_errors.append(f"{message.text} ({location.get('url', '')})")

    def on_page_error(error: Exception) -> None:
        recorded.console_errors.append(f"uncaught: {error}")

    def only_loopback(route: Route) -> None:
        if _is_loopback(route.request.url):
            route.continue_()
        else:
            route.abort("blockedbyclient")

    page.on("request", on_request)
    page.on("console", on_console)
    page.on("pageerror", on_page_error)
    context.route("**/*", only_loopback)
    try:
        yield recorded
    finally:
        context.close()
    if recorded.console_errors:
        pytest.fail("console errors:\n" + "\n".join(recorded.console_errors), pytrace=False)
