"""The plans that exist out of the box (CONTRACT.md): free, pro and enterprise."""

from django.db import migrations

PLANS = [
    # slug, name, jobs/month, rate x, submit rate, concurrency, schedules, min interval s, retention d
    ("free", "Free", 10_000, 1.0, "10/s", 2, 5, 300, 7),
    ("pro", "Pro", 1_000_000, 5.0, "100/s", 20, 100, 60, 30),
    ("enterprise", "Enterprise", 100_000_000, 20.0, "1000/s", 200, 10_000, 1, 90),
]


def create_plans(apps, schema_editor):
    Plan = apps.get_model("billing", "Plan")
    for slug, name, quota, multiplier, submit_rate, concurrency, schedules, interval, days in PLANS:
        Plan.objects.update_or_create(
            slug=slug,
            defaults={
                "name": name,
                "monthly_job_quota": quota,
                "rate_multiplier": multiplier,
                "submit_rate": submit_rate,
                "concurrency": concurrency,
                "max_schedules": schedules,
                "min_interval_seconds": interval,
                "retention_days": days,
            },
        )


class Migration(migrations.Migration):
    dependencies = [("billing", "0001_initial")]

    operations = [migrations.RunPython(create_plans, migrations.RunPython.noop)]
