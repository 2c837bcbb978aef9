from __future__ import annotations

from django.contrib import admin

from billing.models import Plan


@admin.register(Plan)
class PlanAdmin(admin.ModelAdmin[Plan]):
    list_display = [
        "slug",
        "name",
        "monthly_job_quota",
        "submit_rate",
        "concurrency",
        "max_schedules",
    ]
