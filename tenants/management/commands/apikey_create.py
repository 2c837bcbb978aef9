from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandParser

from tenants.audit import audit_command, snapshot
from tenants.management.commands._base import as_command_error, tenant_by_slug
from tenants.services import apikey_create


class Command(BaseCommand):
    help = "Create an API key for a tenant. The key is printed once, alone on the last line."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("slug")
        parser.add_argument("--name", default="")
        parser.add_argument(
            "--scopes",
            default="jobs:read,jobs:write,schedules:read,schedules:write",
            help="Comma-separated scopes.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        tenant = tenant_by_slug(options["slug"])
        scopes = [s.strip() for s in options["scopes"].split(",") if s.strip()]
        try:
            created = apikey_create(tenant=tenant, name=options["name"], scopes=scopes)
        except ValidationError as exc:
            raise as_command_error(exc) from None
        audit_command(
            command="apikey_create",
            action="API key created",
            obj=created.api_key,
            after=snapshot(created.api_key),
        )
        self.stdout.write(
            f"API key {created.api_key.key_id} for {tenant.schema_name}, scopes "
            f"{','.join(created.api_key.scopes)}. It is shown once; store it now:"
        )
        self.stdout.write(created.plaintext)
