"""Fair-dispatch weights of the plans out of the box: a backlogged enterprise tenant gets ten
times a free one's share, a pro tenant three times."""

from django.db import migrations

WEIGHTS = {"free": 1.0, "pro": 3.0, "enterprise": 10.0}


def set_weights(apps, schema_editor):
    Plan = apps.get_model("billing", "Plan")
    for slug, weight in WEIGHTS.items():
        Plan.objects.filter(slug=slug).update(fairness_weight=weight)


class Migration(migrations.Migration):
    dependencies = [("billing", "0004_limits")]

    operations = [migrations.RunPython(set_weights, migrations.RunPython.noop)]
