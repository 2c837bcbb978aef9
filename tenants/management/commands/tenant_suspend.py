from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from tenants.management.commands._base import tenant_by_slug
from tenants.services import tenant_set_active


class Command(BaseCommand):
    help = "Suspend a tenant: its keys and portal stop accepting work."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("slug")

    def handle(self, *args: Any, **options: Any) -> None:
        tenant = tenant_set_active(tenant=tenant_by_slug(options["slug"]), active=False)
        self.stdout.write(f"{tenant.schema_name} suspended")
