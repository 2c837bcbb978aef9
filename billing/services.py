"""Writes on plans and subscriptions, and tenant creation on a plan.

`tenant_create_on_plan` is how `manage.py tenant_create --plan` composes the layers: tenants
creates the tenant, its schema, domain and admin (tenants.services.tenant_create), and hands this
module the new tenant inside the same transaction to start its subscription, so a failure in
either leaves nothing behind.
"""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.db import transaction

from billing.models import Plan, Subscription
from billing.selectors import DEFAULT_PLAN_SLUG, plan_get
from tenants.models import Tenant
from tenants.services import TenantCreated, tenant_create


def _plan(slug: str) -> Plan:
    try:
        return plan_get(slug=slug)
    except Plan.DoesNotExist:
        raise ValidationError(f"Unknown plan {slug!r}.") from None


def tenant_create_on_plan(
    *,
    slug: str,
    name: str,
    plan_slug: str = DEFAULT_PLAN_SLUG,
    timezone_name: str = "UTC",
    admin_email: str | None = None,
    admin_password: str | None = None,
) -> TenantCreated:
    """tenants.services.tenant_create, with the tenant subscribed to `plan_slug`."""
    plan = _plan(plan_slug)  # before anything is built: an unknown plan creates nothing

    def subscribe(tenant: Tenant) -> None:
        Subscription.objects.create(tenant=tenant, plan=plan)

    return tenant_create(
        slug=slug,
        name=name,
        timezone_name=timezone_name,
        admin_email=admin_email,
        admin_password=admin_password,
        provision=subscribe,
    )


@transaction.atomic
def subscription_change_plan(*, tenant: Tenant, plan_slug: str) -> Subscription:
    """Move the tenant to another plan (starting a subscription if it had none)."""
    plan = _plan(plan_slug)
    subscription, _ = Subscription.objects.update_or_create(tenant=tenant, defaults={"plan": plan})
    return subscription
