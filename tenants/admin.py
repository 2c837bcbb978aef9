from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any, TypeVar

from django.contrib import admin, messages
from django.db.models import Model, QuerySet
from django.http import HttpRequest

from tenants.audit import audit_admin_action, snapshot
from tenants.models import ApiKey, AuditEntry, Domain, Tenant
from tenants.services import (
    TenantDeletionError,
    apikey_revoke,
    tenant_delete_schedule,
    tenant_delete_undo,
    tenant_set_active,
)

_M = TypeVar("_M", bound=Model)
# The admin's deletion keeps the schema this long (tenant_delete --retention-days for others).
DELETION_RETENTION = timedelta(days=30)


class ReadOnlyAdmin(admin.ModelAdmin[_M]):
    """Pages to look at, never to add, change or delete from (history, rolled-up figures)."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class DomainInline(admin.TabularInline[Domain, Tenant]):
    model = Domain
    extra = 0


@admin.register(Tenant)
class TenantAdmin(admin.ModelAdmin[Tenant]):
    list_display = ["schema_name", "name", "is_active", "deletion_due_at", "created_at"]
    list_filter = ["is_active"]
    search_fields = ["schema_name", "name"]
    inlines = [DomainInline]
    actions = ["suspend", "resume", "schedule_deletion", "undo_deletion"]
    readonly_fields = ["deletion_due_at", "purged_at"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Tenant]:
        return super().get_queryset(request).filter(is_template=False)

    @admin.action(description="Suspend: API keys refused, jobs held until resumed")
    def suspend(self, request: HttpRequest, queryset: QuerySet[Tenant]) -> None:
        self._set_active(request, queryset, active=False)

    @admin.action(description="Resume: held jobs run again")
    def resume(self, request: HttpRequest, queryset: QuerySet[Tenant]) -> None:
        self._set_active(request, queryset, active=True)

    @admin.action(description="Delete: suspend now, drop the schema in 30 days (undoable)")
    def schedule_deletion(self, request: HttpRequest, queryset: QuerySet[Tenant]) -> None:
        def schedule(tenant: Tenant) -> Tenant:
            return tenant_delete_schedule(tenant=tenant, retention=DELETION_RETENTION)

        self._each(request, queryset, "deletion scheduled", schedule)

    @admin.action(description="Undo a scheduled deletion (and resume)")
    def undo_deletion(self, request: HttpRequest, queryset: QuerySet[Tenant]) -> None:
        def undo(tenant: Tenant) -> Tenant:
            return tenant_delete_undo(tenant=tenant)

        self._each(request, queryset, "deletion undone", undo)

    def _each(
        self,
        request: HttpRequest,
        queryset: QuerySet[Tenant],
        verb: str,
        change: Callable[[Tenant], Tenant],
    ) -> None:
        done = 0
        for tenant in queryset:
            before = snapshot(tenant)
            try:
                change(tenant)
            except TenantDeletionError as exc:
                self.message_user(request, str(exc), level=messages.WARNING)
                continue
            after = snapshot(tenant)
            audit_admin_action(request, action=verb, obj=tenant, before=before, after=after)
            done += 1
        self.message_user(request, f"{done} tenant(s): {verb}.")

    def _set_active(
        self, request: HttpRequest, queryset: QuerySet[Tenant], *, active: bool
    ) -> None:
        verb = "resumed" if active else "suspended"
        changed = 0
        for tenant in queryset:
            if tenant.is_active == active:
                continue  # nothing changes, nothing to audit
            before = snapshot(tenant)
            tenant_set_active(tenant=tenant, active=active)
            audit_admin_action(
                request, action=verb, obj=tenant, before=before, after=snapshot(tenant)
            )
            changed += 1
        self.message_user(request, f"{changed} tenant(s) {verb}.")


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin[ApiKey]):
    list_display = ["key_id", "tenant", "name", "created_at", "last_used_at", "revoked_at"]
    list_filter = ["tenant"]
    # Metadata only: the hash is never shown, and a key is made by `apikey_create`, which
    # prints its plaintext once.
    exclude = ["key_hash"]
    readonly_fields = ["key_id", "tenant", "created_at", "last_used_at", "revoked_at"]
    actions = ["revoke"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    @admin.action(description="Revoke: the key is refused from now on")
    def revoke(self, request: HttpRequest, queryset: QuerySet[ApiKey]) -> None:
        revoked = 0
        for api_key in queryset.filter(revoked_at__isnull=True):
            before = snapshot(api_key)
            apikey_revoke(api_key=api_key)
            audit_admin_action(
                request, action="revoked", obj=api_key, before=before, after=snapshot(api_key)
            )
            revoked += 1
        self.message_user(request, f"{revoked} key(s) revoked.")


@admin.register(AuditEntry)
class AuditEntryAdmin(ReadOnlyAdmin[AuditEntry]):
    """Read-only: entries are history."""

    list_display = ["at", "actor", "source", "action", "object_type", "object_repr"]
    list_filter = ["source", "object_type"]
    search_fields = ["actor", "action", "object_id", "object_repr"]
    date_hierarchy = "at"
    readonly_fields = [f.name for f in AuditEntry._meta.fields]
