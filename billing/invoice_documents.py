"""An invoice as a file: CSV (billing.invoices.invoice_csv), a printable page and a PDF, with the
download's name. The operator admin and the tenant portal serve the same documents."""

from __future__ import annotations

from django.http import HttpResponse
from django.template.loader import render_to_string

from billing.invoices import invoice_csv, money
from billing.models import Invoice


def invoice_filename(invoice: Invoice, ext: str) -> str:
    return f"invoice-{invoice.tenant.schema_name}-{invoice.period_start:%Y-%m}.{ext}"


def invoice_html(invoice: Invoice) -> str:
    lines = [
        {
            "line": line,
            "unit_price": money(line.unit_price_cents, invoice.currency),
            "amount": money(line.amount_cents, invoice.currency),
        }
        for line in invoice.lines.all()
    ]
    return render_to_string(
        "billing/invoice.html",
        {"invoice": invoice, "lines": lines, "total": money(invoice.total_cents, invoice.currency)},
    )


def _attachment(body: str | bytes, content_type: str, filename: str) -> HttpResponse:
    response = HttpResponse(body, content_type=content_type)
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response


def invoice_csv_response(invoice: Invoice) -> HttpResponse:
    return _attachment(
        invoice_csv(invoice), "text/csv; charset=utf-8", invoice_filename(invoice, "csv")
    )


def invoice_print_response(invoice: Invoice) -> HttpResponse:
    return HttpResponse(invoice_html(invoice))


def invoice_pdf_response(invoice: Invoice) -> HttpResponse:
    try:
        # Imported here: weasyprint loads Pango when imported, and a machine without it
        # still serves every other page (and the printable one instead of this).
        from weasyprint import HTML  # type: ignore[import-untyped]  # ships no hints
    except OSError:
        return HttpResponse(
            "PDF needs Pango, which this server lacks; use the printable page.", status=503
        )
    pdf = HTML(string=invoice_html(invoice)).write_pdf()
    return _attachment(pdf, "application/pdf", invoice_filename(invoice, "pdf"))
