"""The named actors every test can use, built once per run in the test database.

Tenant `acme` with alice (admin) and bob (member); tenant `globex` with carol. Tests see the
database through `db`-free access (`tenant_db`): the actors are committed once and stay, and each
test works with rows it creates itself, so real worker processes see everything a test wrote.
Static files are collected once per run; `web` is a gunicorn server on the test database, and
`browser` / `page` drive headless Chromium (tests/browser.py).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from django.db import connection

from tests.browser import BrowserPage, browser_page, chromium
from tests.servers import LiveWeb, free_port, start_web
from tests.workers import WorkerProcess, worker_environment

if TYPE_CHECKING:
    from playwright.sync_api import Browser


ACTORS_SUBMIT_RATE = "100000/s"
# Nor do the shared actors run into their plan's concurrency cap (2 on free): a job another test
# left in flight (sent to a queue no worker consumes) would otherwise hold a slot for the rest
# of the run. Caps are tested with tenants of their own (test_fair_dispatch.py).
ACTORS_CONCURRENCY = 10_000


@dataclass
class Actors:
    acme: Any
    globex: Any
    initech: Any
    acme_key: str
    globex_key: str


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Browser tests run last: while the browser lives, Django in this process keeps a second
    database connection and its async-safety check is off (tests/browser.py says why)."""
    items.sort(key=lambda item: "browser" in getattr(item, "fixturenames", ()))


@pytest.fixture(scope="session")
def django_db_setup(django_test_environment: None, django_db_blocker: Any) -> Iterator[None]:
    """Create the test database (migrated: public and tenant apps) once, drop it at the end.

    pytest-django's own fixture only creates databases for tests marked `django_db`; ours use
    committed data instead of per-test transactions, so the database is always needed.
    """
    from django.test.utils import setup_databases, teardown_databases

    with django_db_blocker.unblock():
        config = setup_databases(verbosity=0, interactive=False, aliases={"default"})
    yield
    with django_db_blocker.unblock():
        connection.close()
        teardown_databases(config, verbosity=0)


@pytest.fixture(scope="session", autouse=True)
def static_files() -> Path:
    """`collectstatic` into this run's STATIC_ROOT (tests/bootstrap.py), once per run.

    With DEBUG off every `{% static %}` needs the manifest it writes, in this process (admin
    pages through the test client) and in the gunicorn servers tests start; run in-process, it
    also refreshes this process's storage. Autouse, so that no page test depends on the order.
    """
    from django.conf import settings
    from django.core.management import call_command

    call_command("collectstatic", interactive=False, verbosity=0)
    return Path(settings.STATIC_ROOT)


@pytest.fixture(scope="session")
def actors(django_db_setup: None, django_db_blocker: Any) -> Actors:
    from billing.models import Subscription
    from billing.services import tenant_create_on_plan as tenant_create
    from tenants.services import apikey_create
    from tenants.users import tenant_user_create

    with django_db_blocker.unblock():
        acme = tenant_create(
            slug="acme", name="Acme", admin_email="alice@acme.example", admin_password="alice-pw-1"
        ).tenant
        with acme:
            tenant_user_create(email="bob@acme.example", password="bob-pw-1")
        globex = tenant_create(
            slug="globex",
            name="Globex",
            plan_slug="pro",
            admin_email="carol@globex.example",
            admin_password="carol-pw-1",
        ).tenant
        initech = tenant_create(slug="initech", name="Initech").tenant
        # Tests throughout submit faster than any plan allows: an operator's override lifts the
        # shared actors' submit rate and cap (tests of limits use tenants of their own).
        Subscription.objects.filter(tenant__in=[acme, globex, initech]).update(
            submit_rate_override=ACTORS_SUBMIT_RATE, concurrency_override=ACTORS_CONCURRENCY
        )
        acme_key = apikey_create(tenant=acme, name="acme test key").plaintext
        globex_key = apikey_create(tenant=globex, name="globex test key").plaintext
    return Actors(
        acme=acme, globex=globex, initech=initech, acme_key=acme_key, globex_key=globex_key
    )


@pytest.fixture
def tenant_db(actors: Actors, django_db_blocker: Any) -> Iterator[Actors]:
    """Database access without a wrapping transaction (workers must see what tests write)."""
    with django_db_blocker.unblock():
        connection.set_schema_to_public()
        yield actors
        connection.set_schema_to_public()


@pytest.fixture(scope="module")
def prefork_worker(actors: Actors, django_db_blocker: Any) -> Iterator[WorkerProcess]:
    with WorkerProcess(pool="prefork", concurrency=2) as worker:
        yield worker


@pytest.fixture(scope="module")
def thread_worker(actors: Actors, django_db_blocker: Any) -> Iterator[WorkerProcess]:
    # A queue of its own: the prefork worker of the same module must not take its jobs.
    with WorkerProcess(pool="threads", concurrency=4, queues=f"threads-{os.getpid()}") as worker:
        yield worker


@pytest.fixture(scope="session")
def web(actors: Actors, static_files: Path) -> Iterator[LiveWeb]:
    """gunicorn as in production (DEBUG off, a sync worker) on the run's test database."""
    env = worker_environment()
    # Set for this process only while a browser runs (tests/browser.py); the server is ordinary.
    env.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
    port = free_port()
    proc = start_web(env, port)
    try:
        yield LiveWeb(port=port, proc=proc)
    finally:
        proc.stop()


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    """One headless Chromium for the run; skips (fails under CI) when there is none."""
    with chromium() as launched:
        yield launched


@pytest.fixture
def page(browser: Browser, request: pytest.FixtureRequest) -> Iterator[BrowserPage]:
    """A fresh page recording its requests; a console error fails the test."""
    with browser_page(browser, request.node.name) as recorded:
        yield recorded
