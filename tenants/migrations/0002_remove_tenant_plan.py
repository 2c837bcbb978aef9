"""Tenants no longer point at plans: the link is billing.Subscription (copied there first)."""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [("tenants", "0001_initial"), ("billing", "0003_subscription")]

    operations = [migrations.RemoveField(model_name="tenant", name="plan")]
