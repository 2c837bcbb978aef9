from __future__ import annotations

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest

from billing.models import Plan, Subscription
from tenants.admin import TenantAdmin
from tenants.models import Tenant


@admin.register(Plan)
class PlanAdmin(admin.ModelAdmin[Plan]):
    list_display = [
        "slug",
        "name",
        "monthly_job_quota",
        "submit_rate",
        "concurrency",
        "max_schedules",
    ]


class SubscriptionInline(admin.StackedInline[Subscription, Tenant]):
    model = Subscription
    can_delete = False
    readonly_fields = ["started_at", "changed_at"]


# The tenant's page shows its plan: billing extends the tenants admin (tenants knows no plans).
admin.site.unregister(Tenant)


@admin.register(Tenant)
class TenantWithPlanAdmin(TenantAdmin):
    inlines = [*TenantAdmin.inlines, SubscriptionInline]
    list_display = [*TenantAdmin.list_display, "plan"]
    list_filter = [*TenantAdmin.list_filter, "subscription__plan"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Tenant]:
        return super().get_queryset(request).select_related("subscription__plan")

    @admin.display(description="plan", ordering="subscription__plan__slug")
    def plan(self, tenant: Tenant) -> str:
        subscription = getattr(tenant, "subscription", None)
        return subscription.plan.slug if subscription is not None else "-"
