"""The tenant_create command: a cloned schema, a domain and an admin user, all or nothing."""

from __future__ import annotations

import uuid
from io import StringIO

import pytest
from django.apps import apps
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection
from django_tenants.utils import schema_exists

import tenants.services
from billing.selectors import tenant_plan
from jobs.models import Job
from tenants.models import Domain, Tenant
from tests.schemas import schemas_holding, schemas_with_table


def _drop_tenant(slug: str) -> None:
    connection.set_schema_to_public()
    Tenant.objects.filter(schema_name=slug).delete()
    with connection.cursor() as cursor:
        cursor.execute(f'DROP SCHEMA IF EXISTS "{slug}" CASCADE')


@pytest.fixture
def new_slug(tenant_db):
    """Makes unique, valid slugs; drops whatever tenant and schema they ended up with."""
    made: list[str] = []

    def make(length: int = 15) -> str:
        slug = f"tc{uuid.uuid4().hex}"[:length].ljust(length, "x")
        made.append(slug)
        return slug

    yield make
    for slug in made:
        _drop_tenant(slug)


def _create(slug: str, *args: str, **options: str) -> str:
    out = StringIO()
    options.setdefault("name", f"Tenant {slug}")
    call_command("tenant_create", slug, *args, stdout=out, **options)
    return out.getvalue()


def _schema_count() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_namespace")
        return cursor.fetchone()[0]


def _totals() -> tuple[int, int, int]:
    connection.set_schema_to_public()
    return Tenant.objects.count(), Domain.objects.count(), _schema_count()


def _tables(schema: str) -> set[str]:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = %s", [schema]
        )
        return {row[0] for row in cursor.fetchall()}


def _migrations(schema: str) -> set[tuple[str, str]]:
    with connection.cursor() as cursor:
        # A slug this module generated or the template's name, never outside input.
        cursor.execute(f'SELECT app, name FROM "{schema}".django_migrations')  # noqa: S608
        return set(cursor.fetchall())


def test_it_creates_a_schema_cloned_from_the_template(new_slug):
    slug = new_slug()
    _create(slug)
    assert schema_exists(slug)
    template = settings.TENANT_BASE_SCHEMA
    tables = _tables(slug)
    assert "jobs_job" in tables
    assert tables == _tables(template)
    migrations = _migrations(slug)
    assert ("jobs", "0001_initial") in migrations
    assert migrations == _migrations(template)


def test_it_creates_the_tenant_row_on_the_free_plan_in_utc_by_default(new_slug):
    slug = new_slug()
    out = _create(slug, name="Hooli")
    tenant = Tenant.objects.get(schema_name=slug)
    assert (tenant.name, tenant_plan(tenant_id=tenant.pk).slug, tenant.timezone) == (
        "Hooli",
        "free",
        "UTC",
    )
    assert tenant.is_active is True
    assert tenant.is_template is False
    assert f"tenant: {slug} (Hooli), plan free" in out


def test_it_creates_the_primary_domain_under_the_base_domain(new_slug):
    slug = new_slug()
    out = _create(slug)
    domains = list(Domain.objects.filter(tenant__schema_name=slug))
    assert [(d.domain, d.is_primary) for d in domains] == [(f"{slug}.localhost", True)]
    assert f"domain: {slug}.localhost" in out


def test_it_creates_the_admin_user_in_the_tenant_schema_only(new_slug):
    slug = new_slug()
    email = f"Boss.{slug}@Example.com"
    out = _create(slug, admin_email=email, admin_password="a-long-password-1")
    normalized = email.lower()
    assert schemas_holding("auth_user", "username", [normalized]) == {normalized: {slug}}
    with Tenant.objects.get(schema_name=slug):
        user = get_user_model().objects.get(username=normalized)
        assert user.email == normalized
        assert user.is_staff is True
        assert user.is_superuser is False
        assert user.check_password("a-long-password-1")
    assert f"admin: {email}" in out


def test_it_creates_no_user_without_an_admin_email(new_slug):
    slug = new_slug()
    _create(slug)
    with Tenant.objects.get(schema_name=slug):
        assert get_user_model().objects.count() == 0


def test_it_puts_the_tenant_on_the_plan_given(new_slug):
    slug = new_slug()
    out = _create(slug, plan="enterprise")
    assert tenant_plan(tenant_id=Tenant.objects.get(schema_name=slug).pk).slug == "enterprise"
    assert "plan enterprise" in out


def test_it_stores_the_time_zone_given(new_slug):
    slug = new_slug()
    _create(slug, timezone="Europe/Paris")
    assert Tenant.objects.get(schema_name=slug).timezone == "Europe/Paris"


def test_a_new_tenant_can_query_every_tenant_model_at_once(new_slug):
    slug = new_slug()
    _create(slug)
    tenant_models = [
        model
        for app_label in {a.rsplit(".", 1)[-1] for a in settings.TENANT_APPS}
        for model in apps.get_app_config(app_label).get_models()
    ]
    assert Job in tenant_models
    with Tenant.objects.get(schema_name=slug):
        counts = {model._meta.label: model.objects.count() for model in tenant_models}
    assert counts["jobs.Job"] == 0
    assert counts["django_celery_results.TaskResult"] == 0
    assert counts["auth.User"] == 0


def test_a_new_tenant_sees_none_of_another_tenants_jobs(new_slug, tenant_db):
    with tenant_db.acme:
        job = Job.objects.create(
            type="demo.add", status="cancelled", queue="default", submitted_by="operator"
        )
    try:
        slug = new_slug()
        _create(slug)
        with Tenant.objects.get(schema_name=slug):
            assert Job.objects.count() == 0
    finally:
        with tenant_db.acme:
            Job.objects.filter(id=job.id).delete()


# --- refusals: a CommandError and nothing created --------------------------------------------


@pytest.mark.parametrize(
    "slug",
    [
        "Acme",
        "ACME_CORP",
        "ab",
        "a",
        "",
        "1acme",
        "_acme",
        "acme-corp",
        "acme corp",
        "a;drop",
        'a"; drop schema public; --',
        "public",
        "tenant_template",
        "information_schema",
        "pg_x",
        "pg_catalog",
        "www",
        "a" * 42,
    ],
)
def test_it_refuses_an_invalid_slug_and_creates_nothing(tenant_db, slug):
    before = _totals()
    with pytest.raises(CommandError):
        _create(slug)
    assert _totals() == before
    assert not Tenant.objects.filter(schema_name=slug, is_template=False).exists()
    assert not Domain.objects.filter(domain=f"{slug}.localhost").exists()


def test_it_refuses_an_underscore_because_the_slug_is_also_a_host_name(tenant_db):
    # Django refuses a Host header with "_" (400): such a tenant could never reach its portal.
    before = _totals()
    with pytest.raises(CommandError, match="Underscores cannot be used"):
        _create("big_corp")
    assert _totals() == before


def test_a_new_tenants_own_host_answers(new_slug):
    from django.test import Client

    slug = new_slug()
    _create(slug)
    response = Client(HTTP_HOST=f"{slug}.localhost").get("/healthz")
    assert (response.status_code, response.json()["schema"]) == (200, slug)


def test_it_accepts_the_longest_valid_slug(new_slug):
    slug = new_slug(41)
    _create(slug)
    assert Tenant.objects.filter(schema_name=slug).exists()


def test_it_refuses_a_duplicate_slug_and_changes_nothing(tenant_db):
    acme_domains = set(
        Domain.objects.filter(tenant=tenant_db.acme).values_list("domain", flat=True)
    )
    before = _totals()
    with pytest.raises(CommandError, match="already exists"):
        _create("acme", name="Another Acme", plan="pro")
    assert _totals() == before
    acme = Tenant.objects.get(schema_name="acme")
    assert (acme.name, tenant_plan(tenant_id=acme.pk).slug) == ("Acme", "free")
    assert set(Domain.objects.filter(tenant=acme).values_list("domain", flat=True)) == acme_domains


def test_it_refuses_a_slug_whose_schema_already_exists_without_a_tenant(new_slug):
    slug = new_slug()
    with connection.cursor() as cursor:
        cursor.execute(f'CREATE SCHEMA "{slug}"')
        cursor.execute(f'CREATE TABLE "{slug}".keep_me (id int)')
    before = _totals()
    with pytest.raises(CommandError):
        _create(slug)
    assert _totals() == before
    assert not Tenant.objects.filter(schema_name=slug).exists()
    # The stray schema is left as it was, not replaced or dropped.
    assert _tables(slug) == {"keep_me"}


def test_it_refuses_an_unknown_plan_and_creates_nothing(new_slug):
    slug = new_slug()
    before = _totals()
    with pytest.raises(CommandError, match="Unknown plan 'platinum'"):
        _create(slug, plan="platinum")
    assert _totals() == before
    assert not schema_exists(slug)


@pytest.mark.parametrize("zone", ["Mars/Olympus_Mons", "", "../../etc/passwd", "UTC+25"])
def test_it_refuses_an_unknown_time_zone_and_creates_nothing(new_slug, zone):
    slug = new_slug()
    before = _totals()
    with pytest.raises(CommandError, match="Unknown time zone"):
        _create(slug, timezone=zone)
    assert _totals() == before
    assert not schema_exists(slug)


@pytest.mark.parametrize("email", ["not-an-email", "boss@", "@example.com", "a b@example.com"])
def test_it_refuses_an_invalid_admin_email_and_leaves_no_schema_behind(new_slug, email):
    slug = new_slug()
    before = _totals()
    with pytest.raises(CommandError):
        _create(slug, admin_email=email, admin_password="a-long-password-1")
    assert _totals() == before
    assert not schema_exists(slug)
    assert not Tenant.objects.filter(schema_name=slug).exists()
    assert not Domain.objects.filter(domain=f"{slug}.localhost").exists()
    assert connection.schema_name == "public"


def test_a_failure_after_the_clone_leaves_no_tenant_domain_or_schema(new_slug, monkeypatch):
    slug = new_slug()
    cloned: list[bool] = []
    real_clone = tenants.services.schema_clone_from_template

    def clone_then_observe(schema_name: str) -> None:
        real_clone(schema_name)
        cloned.append(schema_exists(schema_name))

    def fail(*args, **kwargs):
        raise RuntimeError("the disk is full")

    monkeypatch.setattr(tenants.services, "schema_clone_from_template", clone_then_observe)
    monkeypatch.setattr(tenants.services, "tenant_user_create", fail)
    before = _totals()
    with pytest.raises(RuntimeError, match="the disk is full"):
        _create(slug, admin_email=f"boss.{slug}@example.com")
    assert cloned == [True]  # the failure really came after the schema existed
    assert _totals() == before
    assert not schema_exists(slug)
    assert slug not in schemas_with_table("jobs_job")
