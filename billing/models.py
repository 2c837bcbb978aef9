"""Plans, subscriptions, rolled-up usage and invoices (public schema).

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
    # Money in integer cents, never floats: every sum and every invoice line is exact.
    price_cents = models.PositiveIntegerField(default=0, help_text="Monthly price, in cents.")
    overage_cents_per_1000_jobs = models.PositiveIntegerField(
        default=0, help_text="Price of every 1,000 jobs over the monthly quota, in cents."
    )
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
    # The bucket's size of that rate. Without it a burst is one second's worth, so a slow rate
    # (under 2/s) could only ever have a burst of 1.
    submit_burst_override = models.PositiveIntegerField(
        null=True,
        blank=True,
        validators=[MinValueValidator(1)],
        help_text="Submissions at once above the submit rate. Blank: one second's worth.",
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


class UsageDay(models.Model):
    """A tenant's counters for one UTC day, as last rolled up from Redis (billing.rollup).

    The values are absolute copies of the Redis hash, with its `seq`: a roll-up writes a row only
    if its `seq` is higher than the stored one, so running it twice changes nothing and a slow
    roll-up never overwrites a newer one.
    """

    tenant = models.ForeignKey("tenants.Tenant", on_delete=models.CASCADE, related_name="+")
    day = models.DateField()
    jobs = models.BigIntegerField(default=0)
    attempts = models.BigIntegerField(default=0)
    run_ms = models.BigIntegerField(default=0)
    seq = models.BigIntegerField(default=0, help_text="The Redis hash's sequence copied.")
    rolled_up_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["tenant", "day"], name="usage_day_unique"),
        ]
        # Retention and other periodic work: the tenants counted since a day.
        indexes = [models.Index(fields=["day", "tenant"], name="usage_day_recent")]

    def __str__(self) -> str:
        return f"{self.tenant_id} {self.day}"


class UsageMonth(models.Model):
    """A tenant's month so far: the sum of its UsageDay rows, rewritten by each roll-up.

    The health view's "tenants nearest their limits" and the usage admin read these rows, one
    per active tenant, instead of summing days.
    """

    tenant = models.ForeignKey("tenants.Tenant", on_delete=models.CASCADE, related_name="+")
    month = models.DateField(help_text="The month's first day.")
    jobs = models.BigIntegerField(default=0)
    attempts = models.BigIntegerField(default=0)
    run_ms = models.BigIntegerField(default=0)
    rolled_up_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["tenant", "month"], name="usage_month_unique"),
        ]
        # The health view: this month's rows, largest first.
        indexes = [models.Index(fields=["month", "-jobs"], name="usage_month_jobs")]

    def __str__(self) -> str:
        return f"{self.tenant_id} {self.month:%Y-%m}"

    @property
    def run_seconds(self) -> float:
        return self.run_ms / 1000


class InvoiceStatus(models.TextChoices):
    DRAFT = "draft"
    FINAL = "final"


class Invoice(models.Model):
    """A tenant's bill for one calendar month (UTC), in integer cents.

    A draft is rewritten from the rolled-up usage until its period has closed plus the grace
    period (BILLING_INVOICE_GRACE_DAYS, for late counts); then `invoice_close` makes it final.
    A final invoice and its lines cannot be changed or deleted: a trigger in the database refuses
    it (migration 0008), whatever path the write takes.
    """

    tenant = models.ForeignKey("tenants.Tenant", on_delete=models.PROTECT, related_name="+")
    period_start = models.DateField(help_text="The month's first day (UTC).")
    period_end = models.DateField(
        help_text="The next month's first day: the period is [start, end)."
    )
    status = models.CharField(
        max_length=10, choices=InvoiceStatus.choices, default=InvoiceStatus.DRAFT
    )
    currency = models.CharField(max_length=3)
    plan_slug = models.CharField(max_length=40)
    jobs = models.BigIntegerField(default=0)
    attempts = models.BigIntegerField(default=0)
    run_ms = models.BigIntegerField(default=0)
    total_cents = models.BigIntegerField(default=0)
    updated_at = models.DateTimeField(auto_now=True)
    finalized_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-period_start", "tenant_id"]
        constraints = [
            models.UniqueConstraint(fields=["tenant", "period_start"], name="invoice_unique"),
        ]
        # invoice_close: the drafts whose period has closed.
        indexes = [models.Index(fields=["status", "period_end"], name="invoice_open")]

    def __str__(self) -> str:
        return f"{self.tenant_id} {self.period_start:%Y-%m} ({self.status})"

    @property
    def is_final(self) -> bool:
        return self.status == InvoiceStatus.FINAL


class InvoiceLine(models.Model):
    invoice = models.ForeignKey(Invoice, on_delete=models.CASCADE, related_name="lines")
    position = models.PositiveSmallIntegerField()
    description = models.CharField(max_length=200)
    quantity = models.BigIntegerField()
    unit = models.CharField(max_length=40)
    unit_price_cents = models.BigIntegerField(help_text="Price per unit, in cents.")
    amount_cents = models.BigIntegerField()

    class Meta:
        ordering = ["invoice", "position"]
        constraints = [
            models.UniqueConstraint(fields=["invoice", "position"], name="invoice_line_unique"),
        ]

    def __str__(self) -> str:
        return self.description
