from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandParser

from tenants.management.commands._base import as_command_error, tenant_by_slug
from tenants.services import tenant_set_plan


class Command(BaseCommand):
    help = "Move a tenant to another plan."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("slug")
        parser.add_argument("plan")

    def handle(self, *args: Any, **options: Any) -> None:
        tenant = tenant_by_slug(options["slug"])
        try:
            tenant_set_plan(tenant=tenant, plan_slug=options["plan"])
        except ValidationError as exc:
            raise as_command_error(exc) from None
        self.stdout.write(f"{tenant.schema_name} is now on plan {tenant.plan.slug}")
