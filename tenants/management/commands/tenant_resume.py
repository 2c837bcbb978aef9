from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from tenants.management.commands._base import tenant_set_active_audited


class Command(BaseCommand):
    help = "Resume a suspended tenant: its held jobs run again."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("slug")

    def handle(self, *args: Any, **options: Any) -> None:
        tenant = tenant_set_active_audited(
            command="tenant_resume", slug=options["slug"], active=True
        )
        self.stdout.write(f"{tenant.schema_name} resumed")
