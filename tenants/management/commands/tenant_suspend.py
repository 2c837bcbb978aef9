from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from tenants.management.commands._base import tenant_set_active_audited


class Command(BaseCommand):
    help = "Suspend a tenant: its keys and portal stop accepting work, its jobs are held."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("slug")

    def handle(self, *args: Any, **options: Any) -> None:
        tenant = tenant_set_active_audited(
            command="tenant_suspend", slug=options["slug"], active=False
        )
        self.stdout.write(f"{tenant.schema_name} suspended")
