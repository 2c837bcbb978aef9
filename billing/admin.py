"""Plans, each tenant's subscription and limit overrides, usage and invoices, for operators
(public host).

Limits are read through billing.limits, whose answers are cached per process for
LIMITS_CACHE_SECONDS: a change made here is in force everywhere within that, as the pages say.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django import forms
from django.conf import settings
from django.contrib import admin
from django.core.exceptions import ValidationError
from django.db.models import F, FloatField, QuerySet
from django.db.models.functions import Cast
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404
from django.urls import URLPattern, path, reverse
from django.utils.html import format_html

from billing.invoice_documents import (
    invoice_csv_response,
    invoice_pdf_response,
    invoice_print_response,
)
from billing.invoices import InvoiceFinal, invoice_draft, money
from billing.limits import LIMITS_CACHE_SECONDS
from billing.models import Invoice, InvoiceLine, Plan, RateOverride, Subscription, UsageMonth
from tenants.admin import ReadOnlyAdmin, TenantAdmin
from tenants.models import Tenant

IN_FORCE = f"A change is in force in every process within {LIMITS_CACHE_SECONDS:g} seconds."

# The job type names a rate may be given for. billing cannot import the catalogue (it lives in
# jobs, the layer above), so the wiring that assembles the operator admin hands the names in
# (saas_platform.public_admin). Until it has, any name is taken.
_job_types: tuple[str, ...] = ()


def admin_job_types_set(names: Iterable[str]) -> None:
    global _job_types
    _job_types = tuple(sorted(names))


def _unknown_job_type(name: str) -> ValidationError:
    return ValidationError(
        "There is no job type %(name)s. Known: %(known)s.",
        code="unknown_job_type",
        params={"name": repr(name), "known": ", ".join(_job_types)},
    )


class PlanForm(forms.ModelForm[Plan]):
    class Meta:
        model = Plan
        fields = "__all__"  # noqa: DJ007  # the admin's fieldsets choose and order them

    def clean_rate_overrides(self) -> Any:
        value = self.cleaned_data.get("rate_overrides")
        if value is None:
            return {}  # an emptied box: no overrides (the column is NOT NULL)
        if isinstance(value, dict) and _job_types:
            # A name that was already there stays valid even if its type has left the catalogue:
            # the operator may be editing something else.
            before = self.initial.get("rate_overrides") or {}
            unknown = [name for name in value if name not in _job_types and name not in before]
            if unknown:
                raise ValidationError([_unknown_job_type(name) for name in unknown])
        return value


@admin.register(Plan)
class PlanAdmin(admin.ModelAdmin[Plan]):
    form = PlanForm
    list_display = [
        "slug",
        "name",
        "monthly_job_quota",
        "submit_rate",
        "concurrency",
        "rate_multiplier",
        "fairness_weight",
        "max_schedules",
    ]
    fieldsets = [
        (None, {"fields": ["slug", "name"]}),
        (
            "Limits",
            {
                "description": IN_FORCE,
                "fields": [
                    "monthly_job_quota",
                    "submit_rate",
                    "concurrency",
                    "rate_multiplier",
                    "rate_overrides",
                    "fairness_weight",
                ],
            },
        ),
        (
            "Schedules and retention",
            {"fields": ["max_schedules", "min_interval_seconds", "retention_days"]},
        ),
        (
            "Price",
            {
                "description": "In cents. Drafts use the price in force; finals keep theirs.",
                "fields": ["price_cents", "overage_cents_per_1000_jobs"],
            },
        ),
    ]


class SubscriptionInline(admin.StackedInline[Subscription, Tenant]):
    model = Subscription
    can_delete = False
    readonly_fields = ["started_at", "changed_at"]
    fieldsets = [
        (None, {"fields": ["plan", "started_at", "changed_at"]}),
        (
            "Overrides of the plan",
            {
                "description": f"Blank: the plan's. {IN_FORCE}",
                "fields": [
                    "concurrency_override",
                    "submit_rate_override",
                    "submit_burst_override",
                    "fairness_weight_override",
                ],
            },
        ),
    ]


class RateOverrideForm(forms.ModelForm[RateOverride]):
    class Meta:
        model = RateOverride
        fields = ["job_type", "rate", "burst"]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if _job_types:
            self.fields["job_type"].help_text = "Blank: every job type. One of " + ", ".join(
                _job_types
            )

    def clean_job_type(self) -> str:
        name: str = self.cleaned_data.get("job_type", "").strip()
        if name and _job_types and name not in _job_types and name != self.initial.get("job_type"):
            raise _unknown_job_type(name)
        return name


class RateOverrideInline(admin.TabularInline[RateOverride, Tenant]):
    """A tenant's own rates, which win over its plan's (billing.limits says in which order)."""

    model = RateOverride
    form = RateOverrideForm
    extra = 1  # a blank row to fill in, with JavaScript off too
    verbose_name = "rate override"
    verbose_name_plural = (
        "Rate overrides: a job type's row wins over the every-type row (blank job type), which "
        f"wins over the plan. {IN_FORCE}"
    )


# The tenant's page shows its plan: billing extends the tenants admin (tenants knows no plans).
admin.site.unregister(Tenant)


@admin.register(Tenant)
class TenantWithPlanAdmin(TenantAdmin):
    inlines = [*TenantAdmin.inlines, SubscriptionInline, RateOverrideInline]
    list_display = [*TenantAdmin.list_display, "plan"]
    list_filter = [*TenantAdmin.list_filter, "subscription__plan"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Tenant]:
        return super().get_queryset(request).select_related("subscription__plan")

    @admin.display(description="plan", ordering="subscription__plan__slug")
    def plan(self, tenant: Tenant) -> str:
        subscription = getattr(tenant, "subscription", None)
        return subscription.plan.slug if subscription is not None else "-"


@admin.register(UsageMonth)
class UsageMonthAdmin(ReadOnlyAdmin[UsageMonth]):
    """Each tenant's month as of the last roll-up (a minute old at most), read-only."""

    list_display = ["tenant", "month", "jobs", "quota", "percent_used", "attempts", "run_seconds"]
    list_filter = ["month"]
    search_fields = ["tenant__schema_name"]
    list_select_related = ["tenant__subscription__plan"]
    ordering = ["-month", "-jobs"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[UsageMonth]:
        quota = F("tenant__subscription__plan__monthly_job_quota")
        return (
            super()
            .get_queryset(request)
            .annotate(used=Cast("jobs", FloatField()) / Cast(quota, FloatField()))
        )

    @admin.display(description="quota")
    def quota(self, usage: UsageMonth) -> int | str:
        subscription = getattr(usage.tenant, "subscription", None)
        return subscription.plan.monthly_job_quota if subscription else "-"

    @admin.display(description="% of quota", ordering="used")
    def percent_used(self, usage: UsageMonth) -> str:
        used = getattr(usage, "used", None)
        if used is None:
            return "-"
        percent = used * 100
        if percent >= settings.BILLING_QUOTA_ALARM_PERCENT:
            return format_html('<strong class="errornote">{}% (alarm)</strong>', f"{percent:.1f}")
        return f"{percent:.1f}%"


class InvoiceLineInline(admin.TabularInline[InvoiceLine, Invoice]):
    model = InvoiceLine
    extra = 0
    can_delete = False
    fields = ["position", "description", "quantity", "unit", "unit_price_cents", "amount_cents"]
    readonly_fields = ["position", "description", "quantity", "unit"]
    readonly_fields += ["unit_price_cents", "amount_cents"]

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Invoice)
class InvoiceAdmin(admin.ModelAdmin[Invoice]):
    """Invoices are written by billing.invoices only: read-only here, with downloads, and an
    action that rewrites drafts from the latest roll-up."""

    list_display = ["tenant", "period_start", "status", "plan_slug", "jobs", "total", "downloads"]
    list_filter = ["status", "period_start"]
    search_fields = ["tenant__schema_name"]
    list_select_related = ["tenant"]
    inlines = [InvoiceLineInline]
    actions = ["refresh_drafts"]
    readonly_fields = [
        "tenant",
        "period_start",
        "period_end",
        "status",
        "currency",
        "plan_slug",
        "jobs",
        "attempts",
        "run_ms",
        "total_cents",
        "updated_at",
        "finalized_at",
        "downloads",
    ]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.display(description="total", ordering="total_cents")
    def total(self, invoice: Invoice) -> str:
        return money(invoice.total_cents, invoice.currency)

    @admin.display(description="download")
    def downloads(self, invoice: Invoice) -> str:
        if invoice.pk is None:
            return "-"
        return format_html(
            '<a href="{}">CSV</a> · <a href="{}">PDF</a> · <a href="{}">printable</a>',
            reverse("admin:billing_invoice_csv", args=[invoice.pk]),
            reverse("admin:billing_invoice_pdf", args=[invoice.pk]),
            reverse("admin:billing_invoice_print", args=[invoice.pk]),
        )

    @admin.action(description="Rewrite drafts from the latest roll-up (final ones stay)")
    def refresh_drafts(self, request: HttpRequest, queryset: QuerySet[Invoice]) -> None:
        from tenants.audit import audit_admin_action, snapshot

        rewritten = 0
        for invoice in queryset.filter(status="draft"):
            before = snapshot(invoice)
            try:
                fresh = invoice_draft(
                    tenant_id=invoice.tenant_id, period_start=invoice.period_start
                )
            except InvoiceFinal:
                continue  # made final meanwhile
            audit_admin_action(
                request, action="draft rewritten", obj=fresh, before=before, after=snapshot(fresh)
            )
            rewritten += 1
        self.message_user(request, f"{rewritten} draft(s) rewritten.")

    def get_urls(self) -> list[URLPattern]:
        own = [
            path(
                "<int:pk>/csv/",
                self.admin_site.admin_view(self.csv_view),
                name="billing_invoice_csv",
            ),
            path(
                "<int:pk>/pdf/",
                self.admin_site.admin_view(self.pdf_view),
                name="billing_invoice_pdf",
            ),
            path(
                "<int:pk>/print/",
                self.admin_site.admin_view(self.print_view),
                name="billing_invoice_print",
            ),
        ]
        return own + super().get_urls()

    def _invoice(self, request: HttpRequest, pk: int) -> Invoice:
        if not self.has_view_permission(request):
            from django.core.exceptions import PermissionDenied

            raise PermissionDenied
        return get_object_or_404(Invoice.objects.select_related("tenant"), pk=pk)

    def csv_view(self, request: HttpRequest, pk: int) -> HttpResponse:
        return invoice_csv_response(self._invoice(request, pk))

    def print_view(self, request: HttpRequest, pk: int) -> HttpResponse:
        return invoice_print_response(self._invoice(request, pk))

    def pdf_view(self, request: HttpRequest, pk: int) -> HttpResponse:
        return invoice_pdf_response(self._invoice(request, pk))
