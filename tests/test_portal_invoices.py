"""The tenant's invoices on the portal's usage page, with downloads, for its admins only; another
tenant's invoice is a 404 on this host."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from datetime import date

import pytest

from billing.invoices import invoice_draft
from billing.models import Invoice
from tests.portal_helpers import ACME, portal_client

# A month of the past no other test bills, drafted for acme and globex.
MONTH = date(2003, 3, 1)


@pytest.fixture
def invoices(tenant_db) -> Iterator[tuple[Invoice, Invoice]]:
    ours = invoice_draft(tenant_id=tenant_db.acme.pk, period_start=MONTH)
    theirs = invoice_draft(tenant_id=tenant_db.globex.pk, period_start=MONTH)
    yield ours, theirs
    Invoice.objects.filter(pk__in=[ours.pk, theirs.pk]).delete()  # drafts: deletable


def test_an_admin_sees_the_invoices_and_downloads_them(invoices):
    ours, _ = invoices
    client = portal_client(ACME, "alice@acme.example")
    page = client.get("/usage/").content.decode()
    assert f'data-invoice-id="{ours.pk}"' in page
    assert "2003-03" in page
    as_csv = client.get(f"/invoices/{ours.pk}/csv/")
    assert as_csv.status_code == 200
    assert as_csv["Content-Disposition"] == 'attachment; filename="invoice-acme-2003-03.csv"'
    rows = list(csv.reader(io.StringIO(as_csv.content.decode())))
    assert rows[0][:4] == ["invoice", str(ours.pk), "tenant", str(ours.tenant_id)]
    printable = client.get(f"/invoices/{ours.pk}/print/")
    assert printable.status_code == 200
    assert b"Acme" in printable.content
    pdf = client.get(f"/invoices/{ours.pk}/pdf/")
    assert pdf.status_code == 200, pdf.content[:200]
    assert pdf.content.startswith(b"%PDF")
    assert client.get(f"/invoices/{ours.pk}/exe/").status_code == 404


def test_another_tenants_invoice_is_a_404_and_never_listed(invoices):
    _, theirs = invoices
    client = portal_client(ACME, "alice@acme.example")
    for kind in ("csv", "pdf", "print"):
        assert client.get(f"/invoices/{theirs.pk}/{kind}/").status_code == 404, kind
    assert f'data-invoice-id="{theirs.pk}"' not in client.get("/usage/").content.decode()


def test_a_member_is_refused_the_invoices(invoices):
    ours, _ = invoices
    client = portal_client(ACME, "bob@acme.example")
    for kind in ("csv", "pdf", "print"):
        assert client.get(f"/invoices/{ours.pk}/{kind}/").status_code == 403, kind
