"""The tenant-plan link moves from tenants.Tenant.plan to billing.Subscription."""

import django.db.models.deletion
from django.db import migrations, models


def copy_plans(apps, schema_editor):
    Tenant = apps.get_model("tenants", "Tenant")
    Subscription = apps.get_model("billing", "Subscription")
    for tenant_id, plan_id in Tenant.objects.filter(is_template=False).values_list("id", "plan_id"):
        Subscription.objects.get_or_create(tenant_id=tenant_id, defaults={"plan_id": plan_id})


def copy_back(apps, schema_editor):
    Tenant = apps.get_model("tenants", "Tenant")
    Subscription = apps.get_model("billing", "Subscription")
    for tenant_id, plan_id in Subscription.objects.values_list("tenant_id", "plan_id"):
        Tenant.objects.filter(id=tenant_id).update(plan_id=plan_id)


class Migration(migrations.Migration):
    dependencies = [("billing", "0002_default_plans"), ("tenants", "0001_initial")]

    operations = [
        migrations.CreateModel(
            name="Subscription",
            fields=[
                (
                    "tenant",
                    models.OneToOneField(
                        on_delete=django.db.models.deletion.CASCADE,
                        primary_key=True,
                        related_name="subscription",
                        serialize=False,
                        to="tenants.tenant",
                    ),
                ),
                ("started_at", models.DateTimeField(auto_now_add=True)),
                ("changed_at", models.DateTimeField(auto_now=True)),
                (
                    "plan",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="subscriptions",
                        to="billing.plan",
                    ),
                ),
            ],
        ),
        migrations.RunPython(copy_plans, copy_back),
    ]
