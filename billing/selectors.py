"""Reads on plans and subscriptions."""

from __future__ import annotations

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
