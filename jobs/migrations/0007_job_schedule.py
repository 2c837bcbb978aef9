"""Schedules (the policy row beside django-celery-beat's PeriodicTask), their occurrences, and
Job.schedule as a relation over the existing schedule_id column (no data moves)."""

import django.db.models.deletion
import django.utils.timezone
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("django_celery_beat", "0019_alter_periodictasks_options"),
        ("jobs", "0006_dispatch_indexes"),
    ]

    operations = [
        migrations.CreateModel(
            name="Schedule",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("name", models.CharField(max_length=200, unique=True)),
                ("type", models.CharField(max_length=100)),
                ("args", models.JSONField(default=dict)),
                ("timezone", models.CharField(default="UTC", max_length=64)),
                ("anchor", models.DateTimeField(default=django.utils.timezone.now)),
                (
                    "missed_runs",
                    models.CharField(
                        choices=[("run_once", "Run Once"), ("skip", "Skip")],
                        default="run_once",
                        max_length=16,
                    ),
                ),
                ("catch_up_seconds", models.PositiveIntegerField(default=3600)),
                (
                    "overlap",
                    models.CharField(
                        choices=[
                            ("allow", "Allow"),
                            ("skip", "Skip"),
                            ("buffer_one", "Buffer One"),
                        ],
                        default="allow",
                        max_length=16,
                    ),
                ),
                ("jitter_seconds", models.PositiveIntegerField(default=0)),
                ("last_due_at", models.DateTimeField(blank=True, null=True)),
                ("created_at", models.DateTimeField(auto_now_add=True)),
                ("updated_at", models.DateTimeField(auto_now=True)),
                (
                    "last_job",
                    models.ForeignKey(
                        blank=True,
                        null=True,
                        on_delete=django.db.models.deletion.SET_NULL,
                        related_name="+",
                        to="jobs.job",
                    ),
                ),
                (
                    "periodic_task",
                    models.OneToOneField(
                        on_delete=django.db.models.deletion.DO_NOTHING,
                        related_name="job_schedule",
                        to="django_celery_beat.periodictask",
                    ),
                ),
            ],
            options={
                "ordering": ["id"],
            },
        ),
        # Job.schedule_id was a plain bigint column; the relation reuses it as it is (no constraint:
        # a job outlives its schedule and keeps its id), so only Django's state changes.
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.RemoveField(model_name="job", name="schedule_id"),
                migrations.AddField(
                    model_name="job",
                    name="schedule",
                    field=models.ForeignKey(
                        blank=True,
                        db_constraint=False,
                        db_index=False,
                        null=True,
                        on_delete=django.db.models.deletion.DO_NOTHING,
                        related_name="+",
                        to="jobs.schedule",
                    ),
                ),
            ],
        ),
        migrations.CreateModel(
            name="ScheduleRun",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("due_at", models.DateTimeField()),
                (
                    "outcome",
                    models.CharField(
                        choices=[
                            ("submitted", "Submitted"),
                            ("skipped_overlap", "Skipped Overlap"),
                            ("buffered", "Buffered"),
                            ("failed", "Failed"),
                        ],
                        max_length=16,
                    ),
                ),
                ("error", models.TextField(blank=True)),
                ("created_at", models.DateTimeField(default=django.utils.timezone.now)),
                (
                    "job",
                    models.ForeignKey(
                        blank=True,
                        null=True,
                        on_delete=django.db.models.deletion.SET_NULL,
                        related_name="+",
                        to="jobs.job",
                    ),
                ),
                (
                    "schedule",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="runs",
                        to="jobs.schedule",
                    ),
                ),
            ],
            options={
                "ordering": ["schedule_id", "-due_at"],
                "constraints": [
                    models.UniqueConstraint(fields=("schedule", "due_at"), name="schedule_run_once")
                ],
            },
        ),
    ]
