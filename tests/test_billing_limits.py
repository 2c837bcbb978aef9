"""billing.limits: where each limit of a tenant comes from, and the per-process cache.

A job type's rate, first match wins: the tenant's override for the type, the tenant's override
for every type, the plan's rate_overrides, the type's annotation (or '*') times the plan's
multiplier. On a plan and a tenant of this module's own; each test starts without overrides.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from django.db import connection

from billing.limits import (
    FALLBACK_RATE,
    LIMITS_CACHE_SECONDS,
    Rate,
    limits_cache_clear,
    tenant_limits,
)
from billing.models import Plan, RateOverride, Subscription
from billing.rates import rate_per_second, rate_scale

ANNOTATIONS = {"*": {"rate_limit": "10/s"}, "email.send": {"rate_limit": "1/s"}}


@pytest.fixture(scope="module")
def own(actors: Any, django_db_blocker: Any) -> Iterator[tuple[Any, Plan]]:
    from billing.services import tenant_create_on_plan
    from tenants.models import Tenant

    suffix = uuid.uuid4().hex[:10]
    with django_db_blocker.unblock():
        plan = Plan.objects.create(
            slug=f"bl-{suffix}", name="Limits test", monthly_job_quota=1234, submit_rate="10/s",
            concurrency=2, max_schedules=5, min_interval_seconds=60, retention_days=7,
        )  # fmt: skip
        tenant = tenant_create_on_plan(
            slug=f"bl{suffix}", name="Limits", plan_slug=plan.slug
        ).tenant
    yield tenant, plan
    with django_db_blocker.unblock():
        connection.set_schema_to_public()
        Tenant.objects.filter(pk=tenant.pk).delete()
        with connection.cursor() as cursor:
            cursor.execute(f'DROP SCHEMA IF EXISTS "{tenant.schema_name}" CASCADE')
        plan.delete()
        limits_cache_clear()


@pytest.fixture
def plan(own: tuple[Any, Plan]) -> Plan:
    return own[1]


@pytest.fixture
def tenant(own: tuple[Any, Plan], plan: Plan, tenant_db: Any, settings: Any) -> Iterator[Any]:
    settings.CELERY_TASK_ANNOTATIONS = ANNOTATIONS
    limits_cache_clear()
    yield own[0]
    RateOverride.objects.filter(tenant=own[0]).delete()
    Subscription.objects.update_or_create(
        tenant=own[0],
        defaults={
            "plan": plan,
            "concurrency_override": None,
            "submit_rate_override": "",
            "fairness_weight_override": None,
        },
    )
    Plan.objects.filter(pk=plan.pk).update(
        rate_overrides={}, rate_multiplier=1.0, fairness_weight=1.0, concurrency=2,
        submit_rate="10/s",
    )  # fmt: skip
    limits_cache_clear()


def _plan_set(plan: Plan, **fields: Any) -> None:
    Plan.objects.filter(pk=plan.pk).update(**fields)
    limits_cache_clear()


def _override(tenant: Any, job_type: str, rate: str, burst: int | None = None) -> None:
    RateOverride.objects.create(tenant=tenant, job_type=job_type, rate=rate, burst=burst)
    limits_cache_clear()


def _rate(tenant: Any, job_type: str) -> tuple[str, int]:
    rate = tenant_limits(tenant.pk).rate_for(job_type)
    return rate.text, rate.burst


# --- a job type's rate ---------------------------------------------------------------------------


def test_without_overrides_a_type_gets_its_annotation_times_the_plans_multiplier(tenant, plan):
    _plan_set(plan, rate_multiplier=2.5)
    assert _rate(tenant, "email.send") == ("2.5/s", 3)  # a burst of one second's worth, rounded up
    assert _rate(tenant, "demo.add") == ("25/s", 25)  # '*'


def test_a_type_without_an_annotation_of_its_own_gets_the_star_one(tenant, settings):
    settings.CELERY_TASK_ANNOTATIONS = {"*": {"rate_limit": "6/m"}}
    assert _rate(tenant, "email.send") == ("6/m", 1)  # a tenth of a job a second: a burst of 1


def test_without_any_annotation_the_fallback_rate_applies(tenant, settings):
    settings.CELERY_TASK_ANNOTATIONS = {}
    assert _rate(tenant, "demo.add") == (FALLBACK_RATE, 10)


def test_an_annotations_burst_is_kept_and_not_scaled(tenant, settings, plan):
    settings.CELERY_TASK_ANNOTATIONS = {"demo.add": {"rate_limit": "10/s", "burst": 40}}
    _plan_set(plan, rate_multiplier=2)
    assert _rate(tenant, "demo.add") == ("20/s", 40)


def test_the_plans_rate_for_a_type_replaces_the_scaled_default(tenant, plan):
    _plan_set(plan, rate_multiplier=5, rate_overrides={"email.send": "3/m"})
    assert _rate(tenant, "email.send") == ("3/m", 1)  # not scaled
    assert _rate(tenant, "demo.add") == ("50/s", 50)  # other types: scaled defaults


def test_a_tenants_every_type_override_beats_the_plan(tenant, plan):
    _plan_set(plan, rate_overrides={"email.send": "3/m"})
    _override(tenant, "", "7/s")
    assert _rate(tenant, "email.send") == ("7/s", 7)
    assert _rate(tenant, "demo.add") == ("7/s", 7)


def test_a_tenants_override_for_the_type_beats_its_every_type_override(tenant, plan):
    _plan_set(plan, rate_overrides={"demo.add": "3/m"})
    _override(tenant, "", "7/s")
    _override(tenant, "demo.add", "100/m", burst=12)
    assert _rate(tenant, "demo.add") == ("100/m", 12)
    assert _rate(tenant, "demo.sleep") == ("7/s", 7)


def test_an_override_without_a_burst_gets_one_seconds_worth(tenant):
    _override(tenant, "demo.add", "30/s")
    assert _rate(tenant, "demo.add") == ("30/s", 30)


def test_overrides_are_per_tenant(tenant, tenant_db):
    _override(tenant, "", "1/h")
    assert _rate(tenant, "demo.add") == ("1/h", 1)
    assert _rate(tenant_db.acme, "demo.add") == ("10/s", 10)  # free: the '*' annotation, x1


def test_rates_for_answers_each_type_named(tenant):
    _override(tenant, "demo.add", "2/s")
    rates = tenant_limits(tenant.pk).rates_for(["demo.add", "email.send"])
    assert rates == {"demo.add": Rate.parse("2/s"), "email.send": Rate.parse("1/s")}


# --- the other limits ----------------------------------------------------------------------------


def test_without_overrides_the_plans_limits_apply(tenant, plan):
    limits = tenant_limits(tenant.pk)
    assert limits.plan == plan.slug
    assert (limits.concurrency, limits.weight, limits.jobs_per_month) == (2, 1.0, 1234)
    assert limits.submit_rate == Rate(text="10/s", per_second=10.0, burst=10)


def test_the_subscriptions_overrides_replace_concurrency_submit_rate_and_weight(tenant):
    Subscription.objects.filter(tenant=tenant).update(
        concurrency_override=9, submit_rate_override="300/m", fairness_weight_override=2.5
    )
    limits_cache_clear()
    limits = tenant_limits(tenant.pk)
    assert (limits.concurrency, limits.weight) == (9, 2.5)
    assert limits.submit_rate == Rate(text="300/m", per_second=5.0, burst=5)


def test_a_submit_burst_override_sizes_the_submit_bucket_of_a_slow_rate(tenant):
    # One second's worth of 2/m would be a burst of 1.
    Subscription.objects.filter(tenant=tenant).update(
        submit_rate_override="2/m", submit_burst_override=5
    )
    limits_cache_clear()
    assert tenant_limits(tenant.pk).submit_rate == Rate(text="2/m", per_second=2 / 60, burst=5)


def test_a_concurrency_override_of_zero_is_kept_not_taken_for_blank(tenant):
    Subscription.objects.filter(tenant=tenant).update(concurrency_override=0)
    limits_cache_clear()
    assert tenant_limits(tenant.pk).concurrency == 0


def test_a_weight_of_zero_counts_as_a_hundredth(tenant, plan):
    # The admin refuses it; a row written otherwise must still not divide by zero in dispatch.
    _plan_set(plan, fairness_weight=0)
    assert tenant_limits(tenant.pk).weight == 0.01


def test_a_tenant_without_a_subscription_gets_the_default_plan(tenant):
    Subscription.objects.filter(tenant=tenant).delete()
    limits_cache_clear()
    limits = tenant_limits(tenant.pk)
    assert (limits.plan, limits.submit_rate.text) == ("free", "10/s")


# --- the cache -----------------------------------------------------------------------------------


def test_answers_are_cached_per_process_for_limits_cache_seconds(tenant, plan):
    loaded_at = time.monotonic()
    assert tenant_limits(tenant.pk).concurrency == 2
    Plan.objects.filter(pk=plan.pk).update(concurrency=7)
    cached = tenant_limits(tenant.pk).concurrency
    if time.monotonic() - loaded_at < LIMITS_CACHE_SECONDS:  # else the machine stalled: moot
        assert cached == 2
    time.sleep(max(0.0, loaded_at + LIMITS_CACHE_SECONDS - time.monotonic()) + 0.05)
    assert tenant_limits(tenant.pk).concurrency == 7


def test_limits_cache_clear_makes_the_next_answer_fresh(tenant, plan):
    assert tenant_limits(tenant.pk).concurrency == 2
    Plan.objects.filter(pk=plan.pk).update(concurrency=7)
    limits_cache_clear()
    assert tenant_limits(tenant.pk).concurrency == 7


def test_a_cached_answer_costs_no_query(tenant, django_assert_num_queries):
    tenant_limits(tenant.pk)
    with django_assert_num_queries(0):
        tenant_limits(tenant.pk).rate_for("demo.add")


# --- rates in Celery's notation ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "per_second"), [("10/s", 10), ("90/m", 1.5), ("36/h", 0.01), (" 2.5 / s ", 2.5)]
)
def test_a_rate_is_read_in_celerys_notation(text, per_second):
    assert rate_per_second(text) == pytest.approx(per_second)


@pytest.mark.parametrize(
    ("text", "multiplier", "scaled"),
    [("10/s", 2.5, "25/s"), ("1/s", 2.5, "2.5/s"), ("100/m", 0.5, "50/m"), ("5/h", 1, "5/h")],
)
def test_scaling_a_rate_keeps_its_unit(text, multiplier, scaled):
    assert rate_scale(text, multiplier) == scaled


@pytest.mark.parametrize("text", ["10", "10/sec", "ten/s", "1/d", "", "/s"])
def test_anything_else_is_not_a_rate(text):
    with pytest.raises(ValueError, match="not a rate in Celery notation"):
        rate_per_second(text)
