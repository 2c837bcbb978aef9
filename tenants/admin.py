from __future__ import annotations

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest

from tenants.models import ApiKey, Domain, Tenant


class DomainInline(admin.TabularInline[Domain, Tenant]):
    model = Domain
    extra = 0


@admin.register(Tenant)
class TenantAdmin(admin.ModelAdmin[Tenant]):
    list_display = ["schema_name", "name", "is_active", "created_at"]
    list_filter = ["is_active"]
    search_fields = ["schema_name", "name"]
    inlines = [DomainInline]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Tenant]:
        return super().get_queryset(request).filter(is_template=False)


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin[ApiKey]):
    list_display = ["key_id", "tenant", "name", "created_at", "last_used_at", "revoked_at"]
    list_filter = ["tenant"]
    readonly_fields = ["key_id", "key_hash", "created_at", "last_used_at"]
