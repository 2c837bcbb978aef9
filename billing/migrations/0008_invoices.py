import django.db.models.deletion
from django.db import migrations, models

# A final invoice and its lines are immutable in the database itself: an UPDATE or DELETE of a
# final invoice, or any write to a final invoice's lines, is refused whatever path it takes
# (ORM, queryset.update, raw SQL, the admin). SQLSTATE 23001 (restrict_violation) reaches
# Django as an IntegrityError.
IMMUTABLE_SQL = """
CREATE FUNCTION billing_invoice_immutable() RETURNS trigger AS $$
BEGIN
    IF OLD.status = 'final' THEN
        RAISE EXCEPTION 'invoice % is final and cannot be changed', OLD.id
            USING ERRCODE = 'restrict_violation';
    END IF;
    IF TG_OP = 'DELETE' THEN RETURN OLD; END IF;
    RETURN NEW;
END $$ LANGUAGE plpgsql;
CREATE TRIGGER billing_invoice_immutable BEFORE UPDATE OR DELETE ON billing_invoice
    FOR EACH ROW EXECUTE FUNCTION billing_invoice_immutable();

CREATE FUNCTION billing_invoiceline_immutable() RETURNS trigger AS $$
DECLARE
    parent bigint;
BEGIN
    parent := CASE WHEN TG_OP = 'DELETE' THEN OLD.invoice_id ELSE NEW.invoice_id END;
    IF EXISTS (SELECT 1 FROM billing_invoice WHERE id = parent AND status = 'final')
       OR (TG_OP = 'UPDATE' AND EXISTS (
           SELECT 1 FROM billing_invoice WHERE id = OLD.invoice_id AND status = 'final')) THEN
        RAISE EXCEPTION 'the lines of invoice % are final and cannot be changed', parent
            USING ERRCODE = 'restrict_violation';
    END IF;
    IF TG_OP = 'DELETE' THEN RETURN OLD; END IF;
    RETURN NEW;
END $$ LANGUAGE plpgsql;
CREATE TRIGGER billing_invoiceline_immutable BEFORE INSERT OR UPDATE OR DELETE
    ON billing_invoiceline FOR EACH ROW EXECUTE FUNCTION billing_invoiceline_immutable();
"""

UNDO_SQL = """
DROP TRIGGER IF EXISTS billing_invoiceline_immutable ON billing_invoiceline;
DROP FUNCTION IF EXISTS billing_invoiceline_immutable();
DROP TRIGGER IF EXISTS billing_invoice_immutable ON billing_invoice;
DROP FUNCTION IF EXISTS billing_invoice_immutable();
"""

# Cents: pro 49.00 a month and 0.50 per 1,000 jobs over; enterprise 499.00 and 0.20.
PRICES = {"free": (0, 0), "pro": (4900, 50), "enterprise": (49900, 20)}


def set_prices(apps: object, schema_editor: object) -> None:
    plan = apps.get_model("billing", "Plan")  # type: ignore[attr-defined]
    for slug, (price, overage) in PRICES.items():
        plan.objects.filter(slug=slug).update(
            price_cents=price, overage_cents_per_1000_jobs=overage
        )


class Migration(migrations.Migration):
    """Plan prices and invoices (drafts, then final and immutable)."""

    dependencies = [
        ("billing", "0007_metering_rollups"),
        ("tenants", "0003_api_key_hash_scheme"),
    ]

    operations = [
        migrations.AddField(
            model_name="plan",
            name="overage_cents_per_1000_jobs",
            field=models.PositiveIntegerField(
                default=0, help_text="Price of every 1,000 jobs over the monthly quota, in cents."
            ),
        ),
        migrations.AddField(
            model_name="plan",
            name="price_cents",
            field=models.PositiveIntegerField(default=0, help_text="Monthly price, in cents."),
        ),
        migrations.CreateModel(
            name="Invoice",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("period_start", models.DateField(help_text="The month's first day (UTC).")),
                (
                    "period_end",
                    models.DateField(
                        help_text="The next month's first day: the period is [start, end)."
                    ),
                ),
                (
                    "status",
                    models.CharField(
                        choices=[("draft", "Draft"), ("final", "Final")],
                        default="draft",
                        max_length=10,
                    ),
                ),
                ("currency", models.CharField(max_length=3)),
                ("plan_slug", models.CharField(max_length=40)),
                ("jobs", models.BigIntegerField(default=0)),
                ("attempts", models.BigIntegerField(default=0)),
                ("run_ms", models.BigIntegerField(default=0)),
                ("total_cents", models.BigIntegerField(default=0)),
                ("updated_at", models.DateTimeField(auto_now=True)),
                ("finalized_at", models.DateTimeField(blank=True, null=True)),
                (
                    "tenant",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="+",
                        to="tenants.tenant",
                    ),
                ),
            ],
            options={
                "ordering": ["-period_start", "tenant_id"],
            },
        ),
        migrations.CreateModel(
            name="InvoiceLine",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("position", models.PositiveSmallIntegerField()),
                ("description", models.CharField(max_length=200)),
                ("quantity", models.BigIntegerField()),
                ("unit", models.CharField(max_length=40)),
                ("unit_price_cents", models.BigIntegerField(help_text="Price per unit, in cents.")),
                ("amount_cents", models.BigIntegerField()),
                (
                    "invoice",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="lines",
                        to="billing.invoice",
                    ),
                ),
            ],
            options={
                "ordering": ["invoice", "position"],
            },
        ),
        migrations.AddIndex(
            model_name="invoice",
            index=models.Index(fields=["status", "period_end"], name="invoice_open"),
        ),
        migrations.AddConstraint(
            model_name="invoice",
            constraint=models.UniqueConstraint(
                fields=("tenant", "period_start"), name="invoice_unique"
            ),
        ),
        migrations.AddConstraint(
            model_name="invoiceline",
            constraint=models.UniqueConstraint(
                fields=("invoice", "position"), name="invoice_line_unique"
            ),
        ),
        migrations.RunPython(set_prices, migrations.RunPython.noop),
        migrations.RunSQL(IMMUTABLE_SQL, UNDO_SQL),
    ]
