"""The tenant_suspend and tenant_resume commands."""

from __future__ import annotations

import uuid
from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection

from tenants.models import Tenant


@pytest.fixture(scope="module")
def hooli(actors, django_db_blocker):
    """A tenant of this module's own, so suspending never touches the shared actors."""
    from tenants.services import tenant_create

    slug = f"ts{uuid.uuid4().hex[:12]}"
    with django_db_blocker.unblock():
        tenant = tenant_create(slug=slug, name="Hooli").tenant
    yield tenant
    with django_db_blocker.unblock():
        connection.set_schema_to_public()
        Tenant.objects.filter(pk=tenant.pk).delete()
        with connection.cursor() as cursor:
            cursor.execute(f'DROP SCHEMA IF EXISTS "{slug}" CASCADE')


def _run(command: str, slug: str) -> str:
    out = StringIO()
    call_command(command, slug, stdout=out)
    return out.getvalue()


def _active(tenant) -> bool:
    return Tenant.objects.get(pk=tenant.pk).is_active


def _activity() -> dict[str, bool]:
    return dict(Tenant.objects.values_list("schema_name", "is_active"))


def test_suspend_deactivates_the_tenant(tenant_db, hooli):
    _run("tenant_resume", hooli.schema_name)
    out = _run("tenant_suspend", hooli.schema_name)
    assert _active(hooli) is False
    assert out.strip() == f"{hooli.schema_name} suspended"


def test_resume_reactivates_the_tenant(tenant_db, hooli):
    _run("tenant_suspend", hooli.schema_name)
    out = _run("tenant_resume", hooli.schema_name)
    assert _active(hooli) is True
    assert out.strip() == f"{hooli.schema_name} resumed"


def test_suspending_twice_keeps_it_suspended(tenant_db, hooli):
    _run("tenant_suspend", hooli.schema_name)
    _run("tenant_suspend", hooli.schema_name)
    assert _active(hooli) is False
    _run("tenant_resume", hooli.schema_name)
    assert _active(hooli) is True


def test_suspend_touches_only_the_tenant_named(tenant_db, hooli):
    _run("tenant_resume", hooli.schema_name)
    before = _activity()
    _run("tenant_suspend", hooli.schema_name)
    after = _activity()
    assert after.pop(hooli.schema_name) is False
    before.pop(hooli.schema_name)
    assert after == before
    assert after["acme"] is True


def test_suspend_keeps_the_schema_and_its_data(tenant_db, hooli):
    from jobs.models import Job

    _run("tenant_suspend", hooli.schema_name)
    with Tenant.objects.get(pk=hooli.pk):
        assert Job.objects.count() == 0  # the schema is still there and queryable
    _run("tenant_resume", hooli.schema_name)


@pytest.mark.parametrize("command", ["tenant_suspend", "tenant_resume"])
@pytest.mark.parametrize("slug", ["nobody", "ACME", "tenant_template", ""])
def test_it_refuses_an_unknown_tenant_and_changes_nothing(tenant_db, command, slug):
    before = _activity()
    with pytest.raises(CommandError, match="No tenant"):
        _run(command, slug)
    assert _activity() == before
