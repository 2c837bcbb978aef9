"""The operator admin on the public host: an operator made with `createsuperuser` signs in
through the login form and every admin page answers (CONTRACT.md "Web": operator admin).

Black-box testing found /admin/ answering 500 (django-tenants' admin templates read
`request.tenant.schema_name`), and tenant-only apps' admin pages would have failed on the public
schema, which has no tables for them. So the crawl visits every link of the index and, for every
registered model, its changelist, add page and the change and history pages of an object.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import date
from html.parser import HTMLParser
from typing import Any
from unittest import mock

import pytest
from django.contrib.auth.models import Group, User
from django.core.management import call_command
from django.db import models
from django.test import Client, RequestFactory
from django.urls import resolve, reverse
from django.utils import timezone
from django_celery_beat.models import (
    ClockedSchedule,
    CrontabSchedule,
    IntervalSchedule,
    PeriodicTask,
    SolarSchedule,
)
from saas_platform.lib.db import connection

from billing.invoices import invoice_draft
from billing.models import Invoice, UsageMonth
from tenants.audit import audit_command
from tenants.models import AuditEntry, Tenant

PUBLIC_HOST = "localhost"
PUBLIC_URLCONF = "saas_platform.urls_public"
OPERATOR = "olive"
OPERATOR_PASSWORD = "olive-operator-pw-1"


class _Links(HTMLParser):
    """Every `href` of a page, and the value of its CSRF form field."""

    def __init__(self) -> None:
        super().__init__()
        self.hrefs: list[str] = []
        self.csrf_token: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag == "a" and values.get("href"):
            self.hrefs.append(values["href"] or "")
        if tag == "input" and values.get("name") == "csrfmiddlewaretoken":
            self.csrf_token = values.get("value")


def _parse(content: bytes) -> _Links:
    links = _Links()
    links.feed(content.decode())
    return links


@pytest.fixture(scope="module")
def operator(actors: Any, django_db_blocker: Any) -> Iterator[User]:
    """An operator made the way CONTRACT.md says: `manage.py createsuperuser`, public schema."""
    with django_db_blocker.unblock():
        connection.set_schema_to_public()
        with mock.patch.dict(os.environ, {"DJANGO_SUPERUSER_PASSWORD": OPERATOR_PASSWORD}):
            call_command(
                "createsuperuser",
                interactive=False,
                username=OPERATOR,
                email="olive@operators.example",
                verbosity=0,
            )
        user = User.objects.get(username=OPERATOR)
        yield user
        connection.set_schema_to_public()
        user.delete()


def _usage_month() -> Any:
    tenant = Tenant.objects.get(schema_name="initech")
    return UsageMonth.objects.create(
        tenant=tenant, month=date(2000, 1, 1), jobs=1, rolled_up_at=timezone.now()
    )


def _invoice() -> Any:
    tenant = Tenant.objects.get(schema_name="initech")
    # A month far ahead: no invoice_close of another test makes it final (and undeletable).
    return invoice_draft(tenant_id=tenant.pk, period_start=date(2999, 1, 1))


def _audit_entry() -> Any:
    return audit_command(command="admin crawl", action="crawled")


def _interval() -> IntervalSchedule:
    return IntervalSchedule.objects.create(every=17, period=IntervalSchedule.MINUTES)


# One object for each model that may have none yet, so that every change page is visited; made in
# this order (a PeriodicTask needs a schedule). A newly registered model without objects fails the
# crawl until it gets a line here.
_FACTORIES: dict[type[models.Model], Any] = {
    Group: lambda: Group.objects.create(name="crawl operators"),
    IntervalSchedule: _interval,
    CrontabSchedule: lambda: CrontabSchedule.objects.create(minute="17", hour="3"),
    SolarSchedule: lambda: SolarSchedule.objects.create(
        event="sunrise", latitude="52.52", longitude="13.40"
    ),
    ClockedSchedule: lambda: ClockedSchedule.objects.create(clocked_time=timezone.now()),
    # Read-only models: rows made as their writers make them.
    UsageMonth: _usage_month,
    Invoice: _invoice,
    AuditEntry: _audit_entry,
    # Disabled: a beat running in another test must never run it.
    PeriodicTask: lambda: PeriodicTask.objects.create(
        name="admin crawl (disabled)",
        task="platform.jobs_reconcile",
        interval=IntervalSchedule.objects.order_by("pk").first(),
        enabled=False,
    ),
}


@pytest.fixture
def an_object_of_every_model(operator: User, tenant_db: Any) -> Iterator[dict[type, Any]]:
    """The first object the admin lists for every model, created where there is none (and
    removed again afterwards, newest first, so a PeriodicTask goes before its schedule)."""
    request = RequestFactory().get("/admin/", HTTP_HOST=PUBLIC_HOST)
    request.user = operator
    # The site the public host serves, as its URLconf wired it.
    site = getattr(resolve("/admin/", urlconf=PUBLIC_URLCONF).func, "admin_site")  # noqa: B009

    def first(model: type[models.Model]) -> Any:
        # The admin's own queryset: TenantAdmin hides the template tenant, for one.
        return site._registry[model].get_queryset(request).order_by("pk").first()

    created = [
        factory()
        for model, factory in _FACTORIES.items()
        if model in site._registry and first(model) is None
    ]
    yield {model: first(model) for model in site._registry}
    for obj in reversed(created):
        type(obj)._default_manager.filter(pk=obj.pk).delete()


def _signed_in_client() -> tuple[Client, Any]:
    """A browser-like client signed in through the real form; returns it and the final page."""
    client = Client(HTTP_HOST=PUBLIC_HOST, enforce_csrf_checks=True, raise_request_exception=False)
    form = client.get("/admin/login/?next=/admin/")
    assert form.status_code == 200, form.content[:2000]
    token = _parse(form.content).csrf_token
    assert token, "the login form has no CSRF field"
    landed = client.post(
        "/admin/login/?next=/admin/",
        {
            "csrfmiddlewaretoken": token,
            "username": OPERATOR,
            "password": OPERATOR_PASSWORD,
            "next": "/admin/",
        },
        follow=True,
    )
    return client, landed


def _failure(url: str, response: Any) -> str:
    error = getattr(response, "exc_info", None)
    return f"{url} -> {response.status_code}" + (f" ({error[1]!r})" if error else "")


def test_an_operator_signs_in_through_the_login_form_and_sees_the_admin_index(operator, tenant_db):
    _, landed = _signed_in_client()
    assert landed.redirect_chain == [("/admin/", 302)]
    assert landed.status_code == 200, _failure("/admin/", landed)
    assert landed.wsgi_request.user.username == OPERATOR
    assert b"Site administration" in landed.content


def test_every_admin_page_answers_200_on_the_public_host(operator, an_object_of_every_model):
    client, index = _signed_in_client()
    assert index.status_code == 200, _failure("/admin/", index)
    site = getattr(resolve("/admin/", urlconf=PUBLIC_URLCONF).func, "admin_site")  # noqa: B009
    request = index.wsgi_request
    shown = {href for href in _parse(index.content).hrefs if href.startswith("/admin/")}

    pages = set(shown)
    unlinked: list[str] = []
    without_objects: list[str] = []
    for model, obj in an_object_of_every_model.items():
        meta = model._meta
        name = f"admin:{meta.app_label}_{meta.model_name}"
        changelist = reverse(f"{name}_changelist", urlconf=PUBLIC_URLCONF)
        if changelist not in shown:
            unlinked.append(changelist)
        pages.add(changelist)
        # Read-only models (audit entries, rolled-up usage, invoices) have no add page.
        if site._registry[model].has_add_permission(request):
            pages.add(reverse(f"{name}_add", urlconf=PUBLIC_URLCONF))
        if obj is None:
            without_objects.append(meta.label)
            continue
        for view in ("change", "history"):
            pages.add(reverse(f"{name}_{view}", args=[obj.pk], urlconf=PUBLIC_URLCONF))

    # Redirects are not followed: a page that bounced the operator to the login form, or to
    # the changelist for an object it cannot find, is a failure too.
    answers = {url: client.get(url) for url in sorted(pages)}
    failures = [_failure(url, r) for url, r in answers.items() if r.status_code != 200]
    assert failures == [], "\n".join(failures)
    assert unlinked == [], "the index does not link to these"
    assert without_objects == [], "no object to visit: add a factory to _FACTORIES"


def test_the_public_admin_shows_no_tenant_only_app(operator, tenant_db):
    """django_celery_results lives in tenant schemas only: its pages would fail on public."""
    client, index = _signed_in_client()
    hrefs = _parse(index.content).hrefs
    assert not [href for href in hrefs if href.startswith("/admin/django_celery_results/")]
    assert client.get("/admin/django_celery_results/taskresult/").status_code == 404
