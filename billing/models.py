"""Plans and subscriptions (public schema). Later issues add metering, quotas and invoices.

The tenant-plan link lives here, not on the Tenant: `tenants` knows nothing of plans
(DESIGN.md, "Layers").
"""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.core.validators import MinValueValidator
from django.db import models

from billing.rates import validate_rate, validate_rate_overrides

RATE_HELP = 'Celery notation: "10/s", "100/m", "5/h".'


def validate_above_zero(value: float) -> None:
    # A zero multiplier or weight would stop a tenant's jobs for good; suspending says so instead.
    if not value > 0:
        raise ValidationError("Must be above zero.", code="not_above_zero")


class Plan(models.Model):
    """What a tenant may do. `free`, `pro` and `enterprise` come from a data migration."""

    slug = models.SlugField(max_length=40, unique=True)
    name = models.CharField(max_length=100)
    monthly_job_quota = models.PositiveIntegerField(help_text="Jobs a tenant may submit per month.")
    rate_multiplier = models.FloatField(
        default=1.0,
        validators=[validate_above_zero],
        help_text="Scales every job type's default rate (CELERY_TASK_ANNOTATIONS): 2 doubles it.",
    )
    rate_overrides = models.JSONField(
        default=dict,
        blank=True,
        validators=[validate_rate_overrides],
        help_text='Per job type, a rate that replaces the scaled default: {"email.send": "5/s"}.',
    )
    fairness_weight = models.FloatField(
        default=1.0,
        validators=[validate_above_zero],
        help_text="The share of the cluster a backlogged tenant gets against others: a tenant "
        "of weight 3 gets three times the share of one of weight 1.",
    )
    submit_rate = models.CharField(
        max_length=20,
        default="10/s",
        validators=[validate_rate],
        help_text=f"Jobs a tenant may submit over the API. {RATE_HELP}",
    )
    concurrency = models.PositiveIntegerField(help_text="Jobs of one tenant running at once.")
    max_schedules = models.PositiveIntegerField()
    min_interval_seconds = models.PositiveIntegerField(help_text="Shortest interval schedule.")
    retention_days = models.PositiveIntegerField(help_text="How long finished jobs are kept.")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["monthly_job_quota"]

    def __str__(self) -> str:
        return self.name


class Subscription(models.Model):
    """The plan a tenant is on. Every tenant made by `tenant_create` has one."""

    tenant = models.OneToOneField(
        "tenants.Tenant", on_delete=models.CASCADE, primary_key=True, related_name="subscription"
    )
    plan = models.ForeignKey(Plan, on_delete=models.PROTECT, related_name="subscriptions")
    started_at = models.DateTimeField(auto_now_add=True)
    changed_at = models.DateTimeField(auto_now=True)
    # An operator's overrides of the plan for this tenant; empty means the plan's.
    concurrency_override = models.PositiveIntegerField(
        null=True, blank=True, help_text="Jobs of this tenant running at once. Blank: the plan's."
    )
    submit_rate_override = models.CharField(
        max_length=20,
        blank=True,
        validators=[validate_rate],
        help_text=f"Jobs this tenant may submit over the API. {RATE_HELP} Blank: the plan's.",
    )
    fairness_weight_override = models.FloatField(
        null=True,
        blank=True,
        validators=[validate_above_zero],
        help_text="This tenant's share against others. Blank: the plan's.",
    )

    def __str__(self) -> str:
        return f"{self.tenant_id} on {self.plan_id}"


class RateOverride(models.Model):
    """An operator's rate for one tenant and one job type (or every type: job_type blank)."""

    tenant = models.ForeignKey(
        "tenants.Tenant", on_delete=models.CASCADE, related_name="rate_overrides"
    )
    job_type = models.CharField(max_length=100, blank=True, help_text="Blank: every job type.")
    rate = models.CharField(max_length=20, validators=[validate_rate], help_text=RATE_HELP)
    burst = models.PositiveIntegerField(
        null=True,
        blank=True,
        validators=[MinValueValidator(1)],
        help_text="Jobs at once above the rate. Blank: one second's worth.",
    )

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["tenant", "job_type"], name="rate_override_unique")
        ]

    def __str__(self) -> str:
        return f"{self.tenant_id} {self.job_type or '*'} {self.rate}"
