from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from tenants.audit import audit_command, snapshot
from tenants.management.commands._base import tenant_by_slug
from tenants.services import (
    TenantDeletionError,
    tenant_delete_schedule,
    tenant_delete_undo,
    tenant_purge,
    tenants_due_for_purge,
)

DEFAULT_RETENTION_DAYS = 30


class Command(BaseCommand):
    help = (
        "Delete a tenant: suspended now, its schema dropped after --retention-days (30), which "
        "--undo cancels until then. --purge-due drops the schemas whose time has come."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("slug", nargs="?")
        parser.add_argument("--retention-days", type=int, default=DEFAULT_RETENTION_DAYS)
        parser.add_argument("--undo", action="store_true", help="Cancel a scheduled deletion.")
        parser.add_argument(
            "--purge-due", action="store_true", help="Drop every schema whose deletion is due."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if options["purge_due"]:
            if options["slug"] or options["undo"]:
                raise CommandError("--purge-due takes no tenant and no --undo.")
            self._purge_due()
            return
        if not options["slug"]:
            raise CommandError("Name a tenant (or give --purge-due).")
        if options["retention_days"] < 0:
            raise CommandError("--retention-days must be 0 or more.")
        tenant = tenant_by_slug(options["slug"])
        before = snapshot(tenant)
        try:
            if options["undo"]:
                tenant = tenant_delete_undo(tenant=tenant)
                action, said = "deletion undone", f"{tenant.schema_name}: deletion undone, resumed"
            else:
                retention = timedelta(days=options["retention_days"])
                tenant = tenant_delete_schedule(tenant=tenant, retention=retention)
                action = "deletion scheduled"
                said = (
                    f"{tenant.schema_name} suspended; its schema is dropped after "
                    f"{tenant.deletion_due_at:%Y-%m-%d %H:%M} UTC unless undone "
                    f"(tenant_delete {tenant.schema_name} --undo)"
                )
        except TenantDeletionError as exc:
            raise CommandError(str(exc)) from None
        audit_command(
            command="tenant_delete",
            action=action,
            obj=tenant,
            before=before,
            after=snapshot(tenant),
        )
        self.stdout.write(said)

    def _purge_due(self) -> None:
        due = tenants_due_for_purge()
        for tenant in due:
            before = snapshot(tenant)
            tenant = tenant_purge(tenant=tenant)
            audit_command(
                command="tenant_delete",
                action="schema dropped",
                obj=tenant,
                before=before,
                after=snapshot(tenant),
            )
            self.stdout.write(f"{tenant.schema_name}: schema dropped")
        self.stdout.write(f"{len(due)} tenant(s) purged")
