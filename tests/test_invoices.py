"""billing.invoices: a worked example to the cent, drafts until the period closes plus the
grace period, then final and immutable in the database; downloads from the admin.

The worked example (pro-like plan: 49.00 a month, 100,000 jobs, 0.50 per 1,000 over):
123,457 jobs in January 2001, one of them finished at 23:59:59.9 on January 31:
  plan 4,900 + overage 23,457 x 50 / 1,000 = 1,172.85 -> 1,173 (half up) = 6,073 cents.
A late count of 1,000 jobs (still January) arrives during the grace period: 24,457 over,
1,222.85 -> 1,223, total 6,123. After the close, another late count changes nothing.

Tenants here are rows without schemas (bulk_create skips django-tenants' schema creation):
invoices read public tables only.
"""

from __future__ import annotations

import csv
import io
import uuid
from datetime import UTC, date, datetime
from typing import Any

import pytest
from django.db import IntegrityError, transaction

from billing.invoices import (
    InvoiceFinal,
    invoice_draft,
    invoices_close,
    money,
    overage_cents,
)
from billing.metering import usage_count
from billing.models import Invoice, InvoiceLine, Plan, Subscription
from billing.rollup import usage_rollup
from tenants.models import Tenant
from tests.test_admin_operator import _signed_in_client, operator  # noqa: F401  # a fixture

JANUARY = date(2001, 1, 1)
LAST_MOMENT = datetime(2001, 1, 31, 23, 59, 59, 900_000, tzinfo=UTC)
# Rows with no schema are marked as purged tenants' rows are (a schema dropped, the row kept):
# then no beat, reconciler or retention sweep of a later test visits a schema that is not there.
NO_SCHEMA = datetime(2000, 1, 1, tzinfo=UTC)


@pytest.fixture
def billed(tenant_db: Any) -> Tenant:
    suffix = uuid.uuid4().hex[:10]
    plan = Plan.objects.create(
        slug=f"inv-{suffix}", name="Worked", monthly_job_quota=100_000, submit_rate="10/s",
        concurrency=2, max_schedules=5, min_interval_seconds=60, retention_days=7,
        price_cents=4900, overage_cents_per_1000_jobs=50,
    )  # fmt: skip
    [tenant] = Tenant.objects.bulk_create(
        [Tenant(schema_name=f"inv{suffix}", name="Invoiced", purged_at=NO_SCHEMA)]
    )
    Subscription.objects.create(tenant=tenant, plan=plan)
    return tenant


@pytest.mark.parametrize(
    ("over", "rate", "cents"),
    [(0, 50, 0), (1, 50, 0), (9, 50, 0), (10, 50, 1), (23_457, 50, 1173), (1000, 50, 50)],
)
def test_overage_is_rounded_half_up_to_the_cent_in_integers(over, rate, cents):
    assert overage_cents(jobs_over=over, cents_per_1000=rate) == cents


def test_money_is_shown_from_integer_cents():
    assert money(6073, "USD") == "60.73 USD"
    assert money(5, "USD") == "0.05 USD"
    assert money(123_456_789, "EUR") == "1,234,567.89 EUR"


def _a_line(invoice_id: int) -> dict[str, Any]:
    return {
        "invoice_id": invoice_id,
        "position": 9,
        "description": "added later",
        "quantity": 1,
        "unit": "month",
        "unit_price_cents": 1,
        "amount_cents": 1,
    }


def test_the_worked_example_matches_to_the_cent_and_a_final_invoice_cannot_change(billed):
    usage_count(tenant_id=billed.pk, jobs=123_456, at=datetime(2001, 1, 15, tzinfo=UTC))
    usage_count(tenant_id=billed.pk, jobs=1, at=LAST_MOMENT)
    # February's first job is February's.
    usage_count(tenant_id=billed.pk, jobs=1, at=datetime(2001, 2, 1, tzinfo=UTC))
    usage_rollup()

    draft = invoice_draft(tenant_id=billed.pk, period_start=JANUARY)
    assert draft.status == "draft"
    assert draft.jobs == 123_457
    lines = [
        (line.quantity, line.unit_price_cents, line.amount_cents) for line in draft.lines.all()
    ]
    assert lines == [(1, 4900, 4900), (23_457, 50, 1173)]
    assert draft.total_cents == 6073

    # Two days after the month: within the grace period, still a draft.
    invoices_close(now=datetime(2001, 2, 2, 12, tzinfo=UTC))
    draft.refresh_from_db()
    assert draft.status == "draft"

    # A late January count, rolled up before the close, lands on January's invoice.
    usage_count(tenant_id=billed.pk, jobs=1000, at=LAST_MOMENT)
    usage_rollup()
    invoices_close(now=datetime(2001, 2, 4, 0, 0, 1, tzinfo=UTC))
    final = Invoice.objects.get(pk=draft.pk)
    assert final.status == "final"
    assert final.finalized_at is not None
    assert final.jobs == 124_457
    assert final.total_cents == 4900 + 1223

    # After the close: a later count, a roll-up and another close change nothing.
    usage_count(tenant_id=billed.pk, jobs=50_000, at=LAST_MOMENT)
    usage_rollup()
    invoices_close(now=datetime(2001, 2, 10, tzinfo=UTC))
    assert Invoice.objects.get(pk=draft.pk).total_cents == 6123
    with pytest.raises(InvoiceFinal):
        invoice_draft(tenant_id=billed.pk, period_start=JANUARY)
    # The database itself refuses, whatever path the write takes.
    for attempt in (
        lambda: Invoice.objects.filter(pk=draft.pk).update(total_cents=0),
        lambda: Invoice.objects.filter(pk=draft.pk).delete(),
        lambda: InvoiceLine.objects.filter(invoice_id=draft.pk).update(amount_cents=0),
        lambda: InvoiceLine.objects.filter(invoice_id=draft.pk).delete(),
        lambda: InvoiceLine.objects.create(**_a_line(draft.pk)),
    ):
        with pytest.raises(IntegrityError, match="final"), transaction.atomic():
            attempt()
    assert Invoice.objects.get(pk=draft.pk).total_cents == 6123
    assert (
        sum(line.amount_cents for line in InvoiceLine.objects.filter(invoice_id=draft.pk)) == 6123
    )


def test_a_tenant_made_after_a_month_gets_no_invoice_for_it(billed):
    # Closing January 2001 drafts an invoice for every tenant subscribed then: none of today's.
    invoices_close(now=datetime(2001, 2, 10, tzinfo=UTC))
    assert not Invoice.objects.filter(tenant=billed, period_start=JANUARY).exists()
    # Made in December 2000, it owes January's price even without a job.
    Tenant.objects.filter(pk=billed.pk).update(created_at=datetime(2000, 12, 15, tzinfo=UTC))
    invoices_close(now=datetime(2001, 2, 10, tzinfo=UTC))
    invoice = Invoice.objects.get(tenant=billed, period_start=JANUARY)
    assert invoice.is_final
    assert invoice.total_cents == 4900


def test_the_admin_downloads_an_invoice_as_csv_pdf_and_a_printable_page(billed, operator):  # noqa: F811
    usage_count(tenant_id=billed.pk, jobs=123_457, at=datetime(2002, 6, 3, tzinfo=UTC))
    usage_rollup()
    invoice = invoice_draft(tenant_id=billed.pk, period_start=date(2002, 6, 1))
    client, _ = _signed_in_client()
    base = f"/admin/billing/invoice/{invoice.pk}"
    as_csv = client.get(f"{base}/csv/")
    assert as_csv.status_code == 200
    assert as_csv["Content-Type"].startswith("text/csv")
    rows = list(csv.reader(io.StringIO(as_csv.content.decode())))
    assert ["1", "Worked plan, June 2002", "1", "month", "4900", "4900"] in rows
    assert rows[-1][:2] == ["total_cents", "6073"]
    printable = client.get(f"{base}/print/")
    assert printable.status_code == 200
    assert b"60.73 USD" in printable.content
    assert b"11.73 USD" in printable.content
    pdf = client.get(f"{base}/pdf/")
    assert pdf.status_code == 200, pdf.content[:200]
    assert pdf.content.startswith(b"%PDF")
    change = client.get(f"{base}/change/")
    assert change.status_code == 200
    assert b"60.73 USD" in change.content or b"6073" in change.content
    # Downloads are for operators: a signed-out client is sent to the login form.
    from django.test import Client

    assert Client(HTTP_HOST="localhost").get(f"{base}/csv/").status_code == 302


def test_invoice_close_the_command_closes_as_of_a_time_and_refuses_a_bad_one(billed):
    import io

    from django.core.management import call_command
    from django.core.management.base import CommandError

    Tenant.objects.filter(pk=billed.pk).update(created_at=datetime(2002, 12, 1, tzinfo=UTC))
    out = io.StringIO()
    call_command("invoice_close", "--at", "2003-02-05T00:00:00+00:00", stdout=out)
    assert "made final" in out.getvalue()
    invoice = Invoice.objects.get(tenant=billed, period_start=date(2003, 1, 1))
    assert invoice.is_final
    assert invoice.total_cents == 4900
    for bad in ("yesterday", "2003-02-05T00:00:00"):
        with pytest.raises(CommandError):
            call_command("invoice_close", "--at", bad)
