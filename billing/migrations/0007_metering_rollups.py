import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    """Rolled-up usage: UsageDay (a copy of each Redis day hash with its seq) and UsageMonth."""

    dependencies = [
        ("billing", "0006_limit_validators"),
        ("tenants", "0003_api_key_hash_scheme"),
    ]

    operations = [
        migrations.CreateModel(
            name="UsageDay",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("day", models.DateField()),
                ("jobs", models.BigIntegerField(default=0)),
                ("attempts", models.BigIntegerField(default=0)),
                ("run_ms", models.BigIntegerField(default=0)),
                (
                    "seq",
                    models.BigIntegerField(
                        default=0, help_text="The Redis hash's sequence copied."
                    ),
                ),
                ("rolled_up_at", models.DateTimeField()),
                (
                    "tenant",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="+",
                        to="tenants.tenant",
                    ),
                ),
            ],
        ),
        migrations.CreateModel(
            name="UsageMonth",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("month", models.DateField(help_text="The month's first day.")),
                ("jobs", models.BigIntegerField(default=0)),
                ("attempts", models.BigIntegerField(default=0)),
                ("run_ms", models.BigIntegerField(default=0)),
                ("rolled_up_at", models.DateTimeField()),
                (
                    "tenant",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="+",
                        to="tenants.tenant",
                    ),
                ),
            ],
        ),
        migrations.AddConstraint(
            model_name="usageday",
            constraint=models.UniqueConstraint(fields=("tenant", "day"), name="usage_day_unique"),
        ),
        migrations.AddIndex(
            model_name="usagemonth",
            index=models.Index(fields=["month", "-jobs"], name="usage_month_jobs"),
        ),
        migrations.AddConstraint(
            model_name="usagemonth",
            constraint=models.UniqueConstraint(
                fields=("tenant", "month"), name="usage_month_unique"
            ),
        ),
        migrations.AddIndex(
            model_name="usageday",
            index=models.Index(fields=["day", "tenant"], name="usage_day_recent"),
        ),
    ]
