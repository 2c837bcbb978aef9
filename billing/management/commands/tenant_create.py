from __future__ import annotations

import time
from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandParser

from billing.services import tenant_create_on_plan
from tenants.audit import audit_command, snapshot
from tenants.management.commands._base import as_command_error


class Command(BaseCommand):
    help = "Create a tenant: its schema (named SLUG), domain SLUG.BASE_DOMAIN and an admin user."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("slug")
        parser.add_argument("--name", required=True)
        parser.add_argument("--plan", default="free")
        parser.add_argument("--admin-email")
        parser.add_argument("--admin-password")
        parser.add_argument("--timezone", default="UTC")

    def handle(self, *args: Any, **options: Any) -> None:
        started = time.perf_counter()
        try:
            created = tenant_create_on_plan(
                slug=options["slug"],
                name=options["name"],
                plan_slug=options["plan"],
                timezone_name=options["timezone"],
                admin_email=options["admin_email"],
                admin_password=options["admin_password"],
            )
        except ValidationError as exc:
            raise as_command_error(exc) from None
        elapsed = time.perf_counter() - started
        tenant = created.tenant
        audit_command(command="tenant_create", action="created", obj=tenant, after=snapshot(tenant))
        self.stdout.write(f"tenant: {tenant.schema_name} ({tenant.name}), plan {options['plan']}")
        self.stdout.write(f"schema: {tenant.schema_name}")
        self.stdout.write(f"domain: {created.domain}")
        if created.admin_email:
            self.stdout.write(f"admin: {created.admin_email}")
        self.stdout.write(f"created in {elapsed:.2f}s")
