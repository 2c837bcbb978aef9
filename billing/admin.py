"""Plans and each tenant's subscription and limit overrides, for operators (public host).

Limits are read through billing.limits, whose answers are cached per process for
LIMITS_CACHE_SECONDS: a change made here is in force everywhere within that, as the pages say.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django import forms
from django.contrib import admin
from django.core.exceptions import ValidationError
from django.db.models import QuerySet
from django.http import HttpRequest

from billing.limits import LIMITS_CACHE_SECONDS
from billing.models import Plan, RateOverride, Subscription
from tenants.admin import TenantAdmin
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
