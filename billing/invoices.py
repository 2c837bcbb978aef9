"""Invoices per tenant per month: the plan's price plus overage from the rolled-up usage.

All money is integer cents. Overage is charged per 1,000 jobs over the monthly quota, the
amount rounded half up to the cent once per invoice line (never per job), so that
123,457 jobs on a quota of 100,000 at 50 cents per 1,000 are 23,457 x 50 / 1,000 = 1,172.85,
billed 1,173 cents.

Usage comes from UsageMonth (billing.rollup), never from Redis or a Job row: an invoice is
reproducible from public tables. A job's day is the UTC day it was counted in, so a job that
finished at 23:59:59.9 on a month's last day is on that month's invoice.

Lifecycle: drafts are (re)written while their period is open and during the grace period
(BILLING_INVOICE_GRACE_DAYS) that lets late counts in; `invoices_close` then makes them final.
A final invoice is never rewritten: the database refuses it (migration 0008), and the
functions here skip it before trying.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from billing.models import Invoice, InvoiceLine, InvoiceStatus, Plan, Subscription, UsageMonth
from billing.selectors import tenant_plan

OVERAGE_UNIT_JOBS = 1000


class InvoiceFinal(Exception):
    """The invoice is final: nothing about it may change."""


@dataclass(frozen=True)
class LineDraft:
    description: str
    quantity: int
    unit: str
    unit_price_cents: int
    amount_cents: int


def month_start(day: date) -> date:
    return day.replace(day=1)


def next_month(day: date) -> date:
    first = day.replace(day=1)
    return (
        first.replace(year=first.year + 1, month=1)
        if first.month == 12
        else first.replace(month=first.month + 1)
    )


def overage_cents(*, jobs_over: int, cents_per_1000: int) -> int:
    """Half up, in integers only: (a + b/2) // b is round-half-up for non-negative a, b."""
    return (jobs_over * cents_per_1000 * 2 + OVERAGE_UNIT_JOBS) // (2 * OVERAGE_UNIT_JOBS)


def invoice_lines(*, plan: Plan, jobs: int, period_start: date) -> list[LineDraft]:
    lines = [
        LineDraft(
            description=f"{plan.name} plan, {period_start:%B %Y}",
            quantity=1,
            unit="month",
            unit_price_cents=plan.price_cents,
            amount_cents=plan.price_cents,
        )
    ]
    jobs_over = max(0, jobs - plan.monthly_job_quota)
    if jobs_over and plan.overage_cents_per_1000_jobs:
        lines.append(
            LineDraft(
                description=(
                    f"Jobs over the quota of {plan.monthly_job_quota:,} ({jobs:,} run), per 1,000"
                ),
                quantity=jobs_over,
                unit="jobs (price per 1,000)",
                unit_price_cents=plan.overage_cents_per_1000_jobs,
                amount_cents=overage_cents(
                    jobs_over=jobs_over, cents_per_1000=plan.overage_cents_per_1000_jobs
                ),
            )
        )
    return lines


def _closes_at(period_end: date) -> datetime:
    grace = timedelta(days=settings.BILLING_INVOICE_GRACE_DAYS)
    return datetime.combine(period_end, datetime.min.time(), tzinfo=UTC) + grace


@transaction.atomic
def invoice_draft(*, tenant_id: int, period_start: date) -> Invoice:
    """Write (or rewrite) the tenant's draft for the month from its rolled-up usage.

    Raises InvoiceFinal if the month's invoice is already final.
    """
    period_start = month_start(period_start)
    invoice = (
        Invoice.objects.select_for_update()
        .filter(tenant_id=tenant_id, period_start=period_start)
        .first()
    )
    if invoice is not None and invoice.is_final:
        raise InvoiceFinal(f"The invoice for {period_start:%Y-%m} is final.")
    usage = UsageMonth.objects.filter(tenant_id=tenant_id, month=period_start).first()
    jobs = usage.jobs if usage else 0
    plan = tenant_plan(tenant_id=tenant_id)
    lines = invoice_lines(plan=plan, jobs=jobs, period_start=period_start)
    if invoice is None:
        invoice = Invoice(tenant_id=tenant_id, period_start=period_start)
    invoice.period_end = next_month(period_start)
    invoice.currency = settings.BILLING_CURRENCY
    invoice.plan_slug = plan.slug
    invoice.jobs = jobs
    invoice.attempts = usage.attempts if usage else 0
    invoice.run_ms = usage.run_ms if usage else 0
    invoice.total_cents = sum(line.amount_cents for line in lines)
    invoice.save()
    invoice.lines.all().delete()
    InvoiceLine.objects.bulk_create(
        InvoiceLine(
            invoice=invoice,
            position=position,
            description=line.description,
            quantity=line.quantity,
            unit=line.unit,
            unit_price_cents=line.unit_price_cents,
            amount_cents=line.amount_cents,
        )
        for position, line in enumerate(lines, start=1)
    )
    return invoice


@transaction.atomic
def invoice_finalize(*, invoice: Invoice) -> Invoice:
    """Draft -> final, once (a conditional UPDATE: a second closer changes nothing)."""
    Invoice.objects.filter(pk=invoice.pk, status=InvoiceStatus.DRAFT).update(
        status=InvoiceStatus.FINAL, finalized_at=timezone.now()
    )
    invoice.refresh_from_db()
    return invoice


@dataclass
class CloseResult:
    drafted: int = 0
    finalized: int = 0


def invoices_close(*, now: datetime | None = None) -> CloseResult:
    """Close every month whose period plus grace has passed, and refresh open drafts.

    1. The month that closed most recently (if its grace is over): every subscribed tenant gets
       a draft (a tenant without usage still owes its plan's price), rewritten from the latest
       roll-up, then finalized. Months before it were closed by earlier runs; their leftover
       drafts (a run missed) are refreshed and finalized too.
    2. The current month: drafts of the tenants counted this month (O(active tenants)).
    """
    now = now or timezone.now()
    result = CloseResult()
    last_closed = month_start((now - timedelta(days=settings.BILLING_INVOICE_GRACE_DAYS)).date())
    # `last_closed` is the first month whose grace may still be running: the one before it is
    # closable once its period_end + grace has passed.
    closable = month_start(last_closed - timedelta(days=1))
    if _closes_at(next_month(closable)) <= now:
        have = set(
            Invoice.objects.filter(period_start=closable).values_list("tenant_id", flat=True)
        )
        # Tenants that existed during the month only: one made later owes nothing for it.
        started_before = datetime.combine(next_month(closable), datetime.min.time(), tzinfo=UTC)
        subscribed = Subscription.objects.filter(tenant__created_at__lt=started_before)
        for tenant_id in subscribed.values_list("tenant_id", flat=True):
            if tenant_id not in have:
                invoice_draft(tenant_id=tenant_id, period_start=closable)
                result.drafted += 1
    for invoice in Invoice.objects.filter(status=InvoiceStatus.DRAFT).order_by("period_start"):
        if _closes_at(invoice.period_end) > now:
            continue
        refreshed = invoice_draft(tenant_id=invoice.tenant_id, period_start=invoice.period_start)
        invoice_finalize(invoice=refreshed)
        result.finalized += 1
    current = month_start(now.date())
    for tenant_id in UsageMonth.objects.filter(month=current).values_list("tenant_id", flat=True):
        invoice_draft(tenant_id=tenant_id, period_start=current)
        result.drafted += 1
    return result


def money(cents: int, currency: str) -> str:
    """12345 -> "123.45 USD": integer arithmetic only."""
    sign = "-" if cents < 0 else ""
    whole, part = divmod(abs(cents), 100)
    return f"{sign}{whole:,}.{part:02d} {currency}"


def invoice_csv(invoice: Invoice) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["invoice", invoice.pk, "tenant", invoice.tenant_id, "status", invoice.status])
    writer.writerow(["period", invoice.period_start.isoformat(), invoice.period_end.isoformat()])
    writer.writerow(
        ["position", "description", "quantity", "unit", "unit_price_cents", "amount_cents"]
    )
    for line in invoice.lines.all():
        writer.writerow(
            [
                line.position,
                line.description,
                line.quantity,
                line.unit,
                line.unit_price_cents,
                line.amount_cents,
            ]
        )
    writer.writerow(["total_cents", invoice.total_cents, "currency", invoice.currency])
    return out.getvalue()
