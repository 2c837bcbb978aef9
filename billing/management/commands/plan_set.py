from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandParser

from billing.services import subscription_change_plan
from tenants.audit import audit_command, snapshot
from tenants.management.commands._base import as_command_error, tenant_by_slug


class Command(BaseCommand):
    help = "Move a tenant to another plan."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("slug")
        parser.add_argument("plan")

    def handle(self, *args: Any, **options: Any) -> None:
        tenant = tenant_by_slug(options["slug"])
        before = snapshot(getattr(tenant, "subscription", None))
        try:
            subscription = subscription_change_plan(tenant=tenant, plan_slug=options["plan"])
        except ValidationError as exc:
            raise as_command_error(exc) from None
        audit_command(
            command="plan_set",
            action=f"plan set to {subscription.plan.slug}",
            obj=subscription,
            before=before,
            after=snapshot(subscription),
        )
        self.stdout.write(f"{tenant.schema_name} is now on plan {subscription.plan.slug}")
