"""Reads on plans and subscriptions."""

from __future__ import annotations

from datetime import date

from django.db.models import QuerySet

from billing.models import Invoice, Plan, Subscription

DEFAULT_PLAN_SLUG = "free"


def plan_get(*, slug: str) -> Plan:
    return Plan.objects.get(slug=slug)


def tenant_plan(*, tenant_id: int) -> Plan:
    """The plan the tenant is on; the default plan for a tenant made without a subscription
    (say, by django-tenants' own commands)."""
    subscription = Subscription.objects.select_related("plan").filter(tenant_id=tenant_id).first()
    if subscription is not None:
        return subscription.plan
    return plan_get(slug=DEFAULT_PLAN_SLUG)


def tenants_counted_since(*, day: date) -> list[int]:
    """Tenants with usage counted on `day` or later (rolled up): the "active tenants" that
    periodic platform work visits, so that its cost follows them, not every tenant."""
    from billing.models import UsageDay

    return list(
        UsageDay.objects.filter(day__gte=day).values_list("tenant_id", flat=True).distinct()
    )


def retention_days_max() -> int:
    return max(Plan.objects.values_list("retention_days", flat=True), default=0)


def tenant_invoices(*, tenant_id: int) -> QuerySet[Invoice]:
    """The tenant's invoices, newest period first (invoice_unique's index: tenant, period)."""
    return Invoice.objects.filter(tenant_id=tenant_id).order_by("-period_start")


def tenant_invoice_get(*, tenant_id: int, invoice_id: int) -> Invoice | None:
    """One of the tenant's invoices; None for another tenant's, as for a missing one."""
    return (
        Invoice.objects.select_related("tenant").filter(tenant_id=tenant_id, pk=invoice_id).first()
    )
