"""Operators set limits in the admin (public host): a tenant's subscription overrides and rate
overrides, a plan's rates and weight. A change shows in the tenant's GET /api/v1/usage within
billing.limits.LIMITS_CACHE_SECONDS; an invalid value is a form error and changes nothing.

Through the real admin, signed in through the login form as in test_admin_operator, on a plan
and a tenant of this module's own so that no other test sees the changes.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from html.parser import HTMLParser
from typing import Any

import pytest
from django.db import connection
from django.test import Client

from billing.limits import LIMITS_CACHE_SECONDS, limits_cache_clear
from billing.models import Plan, RateOverride, Subscription
from tests.api_client import call
from tests.test_admin_operator import _signed_in_client, operator  # noqa: F401  # a fixture


@dataclass
class Own:
    tenant: Any
    key: str
    plan: Plan


@pytest.fixture(scope="module")
def own(actors: Any, django_db_blocker: Any) -> Iterator[Own]:
    from billing.services import tenant_create_on_plan
    from tenants.models import Tenant
    from tenants.services import apikey_create

    suffix = uuid.uuid4().hex[:10]
    with django_db_blocker.unblock():
        plan = Plan.objects.create(
            slug=f"al-{suffix}", name="Admin limits test", monthly_job_quota=1000,
            submit_rate="10/s", concurrency=2, max_schedules=5, min_interval_seconds=60,
            retention_days=7,
        )  # fmt: skip
        tenant = tenant_create_on_plan(
            slug=f"al{suffix}", name="Admin limits", plan_slug=plan.slug
        ).tenant
        key = apikey_create(tenant=tenant, name="admin limits").plaintext
    yield Own(tenant=tenant, key=key, plan=plan)
    with django_db_blocker.unblock():
        connection.set_schema_to_public()
        Tenant.objects.filter(pk=tenant.pk).delete()
        with connection.cursor() as cursor:
            cursor.execute(f'DROP SCHEMA IF EXISTS "{tenant.schema_name}" CASCADE')
        plan.delete()
        limits_cache_clear()


@pytest.fixture
def admin_client(operator: Any, tenant_db: Any, own: Own) -> Iterator[Client]:  # noqa: F811
    client, landed = _signed_in_client()
    assert landed.status_code == 200
    yield client
    # Every test starts from the plan's limits.
    RateOverride.objects.filter(tenant=own.tenant).delete()
    Subscription.objects.filter(tenant=own.tenant).update(
        concurrency_override=None,
        submit_rate_override="",
        submit_burst_override=None,
        fairness_weight_override=None,
    )
    Plan.objects.filter(pk=own.plan.pk).update(
        rate_overrides={}, rate_multiplier=1.0, fairness_weight=1.0, submit_rate="10/s"
    )
    limits_cache_clear()


class _Form(HTMLParser):
    """What a browser would post from the page's main form: every field with its value."""

    def __init__(self, form_id: str) -> None:
        super().__init__()
        self.form_id = form_id
        self.inside = False
        self.fields: dict[str, Any] = {}
        self._select: str | None = None
        self._textarea: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {name: value or "" for name, value in attrs}
        if tag == "form":
            self.inside = values.get("id") == self.form_id
        if tag == "option" and self._select and "selected" in values:
            self.fields[self._select] = values.get("value", "")
        if not self.inside or not values.get("name"):
            return
        name = values["name"]
        if tag == "input" and values.get("type") not in ("submit", "button", "file"):
            if values.get("type") == "checkbox" and "checked" not in values:
                return
            self.fields[name] = values.get(
                "value", "on" if values.get("type") == "checkbox" else ""
            )
        elif tag == "select":
            self._select = name
            self.fields.setdefault(name, "")
        elif tag == "textarea":
            self._textarea = name
            self.fields[name] = ""

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self.inside = False
        if tag == "select":
            self._select = None
        if tag == "textarea":
            self._textarea = None

    def handle_data(self, data: str) -> None:
        if self._textarea:
            self.fields[self._textarea] += data


def _form(client: Client, url: str, form_id: str) -> dict[str, Any]:
    page = client.get(url)
    assert page.status_code == 200, page.content[:2000]
    parser = _Form(form_id)
    parser.feed(page.content.decode())
    assert "csrfmiddlewaretoken" in parser.fields
    return parser.fields


def _tenant_url(own: Own) -> str:
    return f"/admin/tenants/tenant/{own.tenant.pk}/change/"


def _plan_url(own: Own) -> str:
    return f"/admin/billing/plan/{own.plan.pk}/change/"


def _post_tenant(client: Client, own: Own, **changes: str) -> Any:
    """The tenant's change form as the page has it, with `changes` made, saved."""
    fields = _form(client, _tenant_url(own), "tenant_form")
    for name in changes:
        assert name in fields, f"the page has no field {name}: {sorted(fields)}"
    return client.post(_tenant_url(own), {**fields, **changes})


def _post_plan(client: Client, own: Own, **changes: str) -> Any:
    fields = _form(client, _plan_url(own), "plan_form")
    for name in changes:
        assert name in fields, f"the page has no field {name}: {sorted(fields)}"
    return client.post(_plan_url(own), {**fields, **changes})


def _limits(own: Own) -> dict[str, Any]:
    answer = call("GET", "/usage", key=own.key)
    assert answer.status == 200, answer.body
    limits: dict[str, Any] = answer.body["limits"]
    return limits


def _shows_within_the_cache_bound(own: Own, shown: Callable[[dict[str, Any]], bool]) -> None:
    """The usage document shows the change within LIMITS_CACHE_SECONDS (plus a little for the
    requests themselves), in this process whose cache was warm before the change."""
    deadline = time.monotonic() + LIMITS_CACHE_SECONDS + 1
    while not shown(limits := _limits(own)):
        assert time.monotonic() < deadline, f"not in force after the cache bound: {limits}"
        time.sleep(0.1)


def _errors(response: Any) -> dict[str, list[str]]:
    """Field name -> messages, over the main form and every inline form of the page."""
    assert response.status_code == 200, f"{response.status_code}: the form was not refused"
    found: dict[str, list[str]] = {}
    forms = [response.context["adminform"].form]
    for inline in response.context["inline_admin_formsets"]:
        forms += list(inline.formset.forms)
    for form in forms:
        for name, messages in form.errors.items():
            found.setdefault(name, []).extend(messages)
    return found


# --- a tenant's page ----------------------------------------------------------------------------


def test_the_tenant_page_shows_the_subscription_overrides_and_the_rate_overrides(admin_client, own):
    fields = _form(admin_client, _tenant_url(own), "tenant_form")
    for name in (
        "subscription-0-concurrency_override",
        "subscription-0-submit_rate_override",
        "subscription-0-submit_burst_override",
        "subscription-0-fairness_weight_override",
        "rate_overrides-0-job_type",
        "rate_overrides-0-rate",
        "rate_overrides-0-burst",
    ):
        assert name in fields, sorted(fields)
    page = admin_client.get(_tenant_url(own)).content.decode()
    assert "One of demo.add, demo.fail" in page  # the known job types, in the help text


def test_a_rate_override_added_in_the_admin_shows_in_the_tenants_usage(admin_client, own):
    assert _limits(own)["rates"]["demo.add"] == "10/s"  # the annotation's '*' (the cache warm)
    saved = _post_tenant(
        admin_client, own,
        **{"rate_overrides-0-job_type": "demo.add", "rate_overrides-0-rate": "7/m",
           "rate_overrides-0-burst": "3"},
    )  # fmt: skip
    assert saved.status_code == 302, _errors(saved)
    _shows_within_the_cache_bound(
        own,
        lambda limits: (limits["rates"]["demo.add"], limits["bursts"]["demo.add"]) == ("7/m", 3),
    )
    assert _limits(own)["rates"]["demo.sleep"] == "10/s"  # other types keep theirs


def test_an_every_type_override_applies_to_types_without_their_own(admin_client, own):
    RateOverride.objects.create(tenant=own.tenant, job_type="demo.add", rate="7/m")
    saved = _post_tenant(
        admin_client, own,
        **{"rate_overrides-1-job_type": "", "rate_overrides-1-rate": "2/s"},
    )  # fmt: skip
    assert saved.status_code == 302, _errors(saved)
    _shows_within_the_cache_bound(own, lambda limits: limits["rates"]["demo.sleep"] == "2/s")
    assert _limits(own)["rates"]["demo.add"] == "7/m"  # its own row wins


def test_the_subscription_overrides_set_in_the_admin_show_in_the_tenants_usage(admin_client, own):
    _limits(own)
    saved = _post_tenant(
        admin_client, own,
        **{"subscription-0-concurrency_override": "9",
           "subscription-0-submit_rate_override": "300/m",
           "subscription-0-submit_burst_override": "40",
           "subscription-0-fairness_weight_override": "2.5"},
    )  # fmt: skip
    assert saved.status_code == 302, _errors(saved)
    _shows_within_the_cache_bound(
        own,
        lambda limits: (
            limits["concurrency"], limits["submit_rate"], limits["submit_burst"],
            limits["fairness_weight"],
        ) == (9, "300/m", 40, 2.5),
    )  # fmt: skip


@pytest.mark.parametrize("rate", ["10/sec", "ten/s", "10", "0/s", "-1/s", "1/d"])
def test_a_rate_not_in_celery_notation_is_a_form_error_and_changes_nothing(admin_client, own, rate):
    before = _limits(own)
    refused = _post_tenant(
        admin_client, own,
        **{"rate_overrides-0-job_type": "demo.add", "rate_overrides-0-rate": rate,
           # Also in the same form: saved only if everything is valid.
           "subscription-0-concurrency_override": "9"},
    )  # fmt: skip
    errors = _errors(refused)
    assert list(errors) == ["rate"], errors
    assert f'"{rate}"' in errors["rate"][0]
    assert "Celery notation" in errors["rate"][0] or "above zero" in errors["rate"][0]
    assert not RateOverride.objects.filter(tenant=own.tenant).exists()
    assert Subscription.objects.get(tenant=own.tenant).concurrency_override is None
    limits_cache_clear()
    assert _limits(own) == before


def test_an_invalid_submit_rate_override_is_a_form_error_on_that_field(admin_client, own):
    refused = _post_tenant(admin_client, own, **{"subscription-0-submit_rate_override": "fast"})
    assert list(_errors(refused)) == ["submit_rate_override"]
    assert Subscription.objects.get(tenant=own.tenant).submit_rate_override == ""


def test_a_zero_fairness_weight_override_is_a_form_error(admin_client, own):
    refused = _post_tenant(admin_client, own, **{"subscription-0-fairness_weight_override": "0"})
    assert list(_errors(refused)) == ["fairness_weight_override"]


def test_an_unknown_job_type_is_a_form_error_naming_the_known_ones(admin_client, own):
    refused = _post_tenant(
        admin_client, own,
        **{"rate_overrides-0-job_type": "demo.addd", "rate_overrides-0-rate": "5/s"},
    )  # fmt: skip
    errors = _errors(refused)
    assert list(errors) == ["job_type"], errors
    assert "There is no job type 'demo.addd'" in errors["job_type"][0]
    assert "demo.add," in errors["job_type"][0]
    assert not RateOverride.objects.filter(tenant=own.tenant).exists()


def test_a_stored_name_no_longer_in_the_catalogue_does_not_block_other_changes(admin_client, own):
    RateOverride.objects.create(tenant=own.tenant, job_type="demo.retired", rate="7/m")
    saved = _post_tenant(admin_client, own, **{"subscription-0-concurrency_override": "4"})
    assert saved.status_code == 302, _errors(saved)
    assert Subscription.objects.get(tenant=own.tenant).concurrency_override == 4
    # But it cannot be given anew.
    refused = _post_tenant(
        admin_client, own,
        **{"rate_overrides-1-job_type": "demo.retired2", "rate_overrides-1-rate": "5/s"},
    )  # fmt: skip
    assert list(_errors(refused)) == ["job_type"]


def test_two_rows_for_the_same_job_type_are_a_form_error_not_a_crash(admin_client, own):
    RateOverride.objects.create(tenant=own.tenant, job_type="demo.add", rate="7/m")
    refused = _post_tenant(
        admin_client, own,
        **{"rate_overrides-1-job_type": "demo.add", "rate_overrides-1-rate": "5/s"},
    )  # fmt: skip
    assert refused.status_code == 200
    assert b"Please correct the duplicate data" in refused.content
    assert RateOverride.objects.filter(tenant=own.tenant).count() == 1


def test_a_zero_burst_is_a_form_error(admin_client, own):
    refused = _post_tenant(
        admin_client, own,
        **{"rate_overrides-0-job_type": "demo.add", "rate_overrides-0-rate": "5/s",
           "rate_overrides-0-burst": "0"},
    )  # fmt: skip
    assert list(_errors(refused)) == ["burst"]


# --- a plan's page ------------------------------------------------------------------------------


def test_the_plan_page_edits_its_rates_weight_concurrency_and_submit_rate(admin_client, own):
    _limits(own)
    saved = _post_plan(
        admin_client, own,
        rate_multiplier="3", rate_overrides='{"email.send": "4/m"}', fairness_weight="7",
        concurrency="5", submit_rate="20/s",
    )  # fmt: skip
    assert saved.status_code == 302, _errors(saved)
    _shows_within_the_cache_bound(
        own,
        lambda limits: (
            limits["rates"]["demo.add"], limits["rates"]["email.send"], limits["fairness_weight"],
            limits["concurrency"], limits["submit_rate"],
        ) == ("30/s", "4/m", 7.0, 5, "20/s"),
    )  # fmt: skip


def test_an_emptied_rate_overrides_box_means_none(admin_client, own):
    Plan.objects.filter(pk=own.plan.pk).update(rate_overrides={"email.send": "4/m"})
    saved = _post_plan(admin_client, own, rate_overrides="")
    assert saved.status_code == 302, _errors(saved)
    assert Plan.objects.get(pk=own.plan.pk).rate_overrides == {}


def test_a_plan_rate_for_a_type_no_longer_in_the_catalogue_does_not_block_other_changes(
    admin_client, own
):
    Plan.objects.filter(pk=own.plan.pk).update(rate_overrides={"demo.retired": "4/m"})
    saved = _post_plan(admin_client, own, fairness_weight="2")
    assert saved.status_code == 302, _errors(saved)
    plan = Plan.objects.get(pk=own.plan.pk)
    assert (plan.rate_overrides, plan.fairness_weight) == ({"demo.retired": "4/m"}, 2.0)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ('{"demo.add": "10/sec"}', 'demo.add: "10/sec" is not a rate in Celery notation'),
        ('{"demo.add": 10}', 'demo.add: the rate must be a string such as "5/s"'),
        ('{"demo.nope": "5/s"}', "There is no job type 'demo.nope'"),
        ('["demo.add", "5/s"]', "A JSON object of job type to rate"),
        ('{"demo.add": "5/s"', "Enter a valid JSON."),
    ],
)
def test_invalid_plan_rate_overrides_are_a_form_error_and_change_nothing(
    admin_client, own, overrides, message
):
    refused = _post_plan(admin_client, own, rate_overrides=overrides, fairness_weight="7")
    errors = _errors(refused)
    assert list(errors) == ["rate_overrides"], errors
    assert any(text.startswith(message) for text in errors["rate_overrides"]), errors
    plan = Plan.objects.get(pk=own.plan.pk)
    assert (plan.rate_overrides, plan.fairness_weight) == ({}, 1.0)


@pytest.mark.parametrize(
    ("field", "value"),
    [("submit_rate", "10 per second"), ("submit_rate", "0/m"), ("rate_multiplier", "0"),
     ("fairness_weight", "-1")],
)  # fmt: skip
def test_invalid_plan_limits_are_a_form_error_on_their_field(admin_client, own, field, value):
    refused = _post_plan(admin_client, own, **{field: value})
    assert list(_errors(refused)) == [field]
    assert Plan.objects.get(pk=own.plan.pk).submit_rate == "10/s"
