"""Reads on plans and subscriptions."""

from __future__ import annotations

from datetime import date

from billing.models import Plan, Subscription

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
