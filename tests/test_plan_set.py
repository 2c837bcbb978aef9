"""The plan_set command, and the plans that exist out of the box (billing data migration)."""

from __future__ import annotations

import uuid
from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection

from billing.models import Plan, Subscription
from billing.selectors import tenant_plan
from tenants.models import Tenant


@pytest.fixture(scope="module")
def hooli(actors, django_db_blocker):
    """A tenant of this module's own, so moving plans never touches the shared actors."""
    from billing.services import tenant_create_on_plan

    slug = f"ps{uuid.uuid4().hex[:12]}"
    with django_db_blocker.unblock():
        tenant = tenant_create_on_plan(slug=slug, name="Hooli").tenant
    yield tenant
    with django_db_blocker.unblock():
        connection.set_schema_to_public()
        Tenant.objects.filter(pk=tenant.pk).delete()
        with connection.cursor() as cursor:
            cursor.execute(f'DROP SCHEMA IF EXISTS "{slug}" CASCADE')


def _plan_set(*args: str) -> str:
    out = StringIO()
    call_command("plan_set", *args, stdout=out)
    return out.getvalue()


def _plan_of(tenant) -> str:
    return tenant_plan(tenant_id=tenant.pk).slug


@pytest.mark.parametrize("plan", ["pro", "enterprise", "free"])
def test_it_moves_the_tenant_to_the_plan(tenant_db, hooli, plan):
    other = "free" if plan != "free" else "pro"
    _plan_set(hooli.schema_name, other)
    assert _plan_of(hooli) == other
    out = _plan_set(hooli.schema_name, plan)
    assert _plan_of(hooli) == plan
    assert f"{hooli.schema_name} is now on plan {plan}" in out


def test_it_moves_only_the_tenant_named(tenant_db, hooli):
    before = {t.schema_name: _plan_of(t) for t in Tenant.objects.exclude(pk=hooli.pk)}
    _plan_set(hooli.schema_name, "enterprise")
    assert _plan_of(hooli) == "enterprise"
    after = {t.schema_name: _plan_of(t) for t in Tenant.objects.exclude(pk=hooli.pk)}
    assert after == before


@pytest.mark.parametrize("plan", ["platinum", "PRO", ""])
def test_it_refuses_an_unknown_plan_and_keeps_the_current_one(tenant_db, hooli, plan):
    _plan_set(hooli.schema_name, "pro")
    with pytest.raises(CommandError, match="Unknown plan"):
        _plan_set(hooli.schema_name, plan)
    assert _plan_of(hooli) == "pro"


@pytest.mark.parametrize("slug", ["nobody", "HOOLI", "tenant_template"])
def test_it_refuses_an_unknown_tenant(tenant_db, slug):
    subscriptions = list(Subscription.objects.values_list("tenant_id", "plan_id"))
    with pytest.raises(CommandError, match="No tenant"):
        _plan_set(slug, "enterprise")
    assert list(Subscription.objects.values_list("tenant_id", "plan_id")) == subscriptions


# --- the plans out of the box ----------------------------------------------------------------


def test_free_pro_and_enterprise_exist_out_of_the_box(tenant_db):
    assert {"free", "pro", "enterprise"} <= set(Plan.objects.values_list("slug", flat=True))


def test_new_tenants_start_on_the_free_plan(tenant_db):
    assert _plan_of(tenant_db.acme) == "free"
    assert Subscription.objects.get(tenant_id=tenant_db.initech.pk).plan.slug == "free"


def test_enterprise_allows_one_second_schedules(tenant_db):
    assert Plan.objects.get(slug="enterprise").min_interval_seconds == 1


def test_each_plan_allows_more_than_the_one_below(tenant_db):
    free, pro, enterprise = (Plan.objects.get(slug=s) for s in ("free", "pro", "enterprise"))
    for field in (
        "monthly_job_quota",
        "rate_multiplier",
        "concurrency",
        "max_schedules",
        "retention_days",
    ):
        values = [getattr(p, field) for p in (free, pro, enterprise)]
        assert 0 < values[0] < values[1] < values[2], field
    intervals = [p.min_interval_seconds for p in (free, pro, enterprise)]
    assert intervals[0] > intervals[1] > intervals[2] >= 1


def test_every_plan_has_a_name_and_a_valid_submit_rate(tenant_db):
    from celery.utils.time import rate

    for plan in Plan.objects.filter(slug__in=["free", "pro", "enterprise"]):
        assert plan.name
        assert rate(plan.submit_rate) > 0, plan.slug
