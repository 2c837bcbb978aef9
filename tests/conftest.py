"""The named actors every test can use, built once per run in the test database.

Tenant `acme` with alice (admin) and bob (member); tenant `globex` with carol. Tests see the
database through `db`-free access (`tenant_db`): the actors are committed once and stay, and each
test works with rows it creates itself, so real worker processes see everything a test wrote.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from django.db import connection

from tests.workers import WorkerProcess


@dataclass
class Actors:
    acme: Any
    globex: Any
    initech: Any
    acme_key: str
    globex_key: str


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


@pytest.fixture(scope="session")
def actors(django_db_setup: None, django_db_blocker: Any) -> Actors:
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
