"""The operator's health view (/admin/health/): workers, queues, throughput, waiting work,
failures and the tenants nearest their limits.

Everything comes from Redis counters and public tables, with a fixed number of round trips
whatever the number of tenants: worker reports (saas_platform.lib.worker_liveness), broker list
lengths (saas_platform.lib.broker), the dispatcher's ready/set-aside sets (jobs.fairness), the
per-minute attempt counters and per-hour failure sets (billing.metering), and UsageMonth joined
with plans (billing, as of the last roll-up). No tenant schema is read: a page load stays cheap
with thousands of tenants. It lives in the wiring because it shows every layer at once.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import redis
from django.conf import settings
from django.contrib import admin
from django.db.models import F, FloatField
from django.db.models.functions import Cast
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.utils import timezone
from saas_platform.lib.broker import queue_depth
from saas_platform.lib.state_redis import state_redis
from saas_platform.lib.worker_liveness import registered_incarnations, worker_reports

from billing.metering import attempts_minute_key, failures_hour_key
from billing.models import UsageMonth
from jobs.fairness import queues_known, waiting_overview
from tenants.models import Tenant

NEAREST_LIMITS = 10
FAILING_TENANTS = 10
MINUTES = 10


@dataclass(frozen=True)
class Nearest:
    tenant: str
    plan: str
    jobs: int
    quota: int
    percent: float
    alarm: bool


def _throughput(client: redis.Redis) -> list[tuple[str, int]]:
    """Attempts ended per minute over the last MINUTES whole minutes, oldest first."""
    now_minute = int(time.time()) // 60
    minutes = list(range(now_minute - MINUTES, now_minute + 1))
    values = client.mget([attempts_minute_key(m) for m in minutes])
    return [
        (time.strftime("%H:%M", time.gmtime(m * 60)), int(v) if v else 0)
        for m, v in zip(minutes, values, strict=True)
    ]


def _failures(client: redis.Redis) -> list[tuple[str, int]]:
    """Failed jobs per tenant over the last hour and this one (two hourly sets, summed)."""
    hour = int(time.time()) // 3600
    pipe = client.pipeline(transaction=False)
    for h in (hour - 1, hour):
        pipe.zrange(failures_hour_key(h), 0, -1, withscores=True)
    totals: dict[int, int] = {}
    for rows in pipe.execute():
        for member, score in rows:
            totals[int(member)] = totals.get(int(member), 0) + int(score)
    top = sorted(totals.items(), key=lambda item: -item[1])[:FAILING_TENANTS]
    names = dict(Tenant.objects.filter(id__in=[t for t, _ in top]).values_list("id", "schema_name"))
    return [(names.get(tenant_id, f"#{tenant_id}"), count) for tenant_id, count in top]


def _nearest_limits() -> list[Nearest]:
    month = timezone.now().date().replace(day=1)
    quota = F("tenant__subscription__plan__monthly_job_quota")
    rows = (
        UsageMonth.objects.filter(month=month, tenant__subscription__isnull=False)
        .annotate(used=Cast("jobs", FloatField()) / Cast(quota, FloatField()))
        .order_by("-used")
        .values(
            "tenant__schema_name",
            "tenant__subscription__plan__slug",
            "jobs",
            "tenant__subscription__plan__monthly_job_quota",
            "used",
        )[:NEAREST_LIMITS]
    )
    alarm = settings.BILLING_QUOTA_ALARM_PERCENT
    return [
        Nearest(
            tenant=row["tenant__schema_name"],
            plan=row["tenant__subscription__plan__slug"],
            jobs=row["jobs"],
            quota=row["tenant__subscription__plan__monthly_job_quota"],
            percent=round((row["used"] or 0) * 100, 1),
            alarm=(row["used"] or 0) * 100 >= alarm,
        )
        for row in rows
    ]


def health_context() -> dict[str, Any]:
    client = state_redis()
    reports = worker_reports(registered_incarnations())
    workers = sorted(reports.values(), key=lambda r: r.node)
    queues = sorted(queues_known() | {q.name for q in settings.CELERY_TASK_QUEUES})
    return {
        "workers": [
            {
                "node": r.node,
                "incarnation": r.incarnation,
                "queues": ", ".join(r.queues),
                "concurrency": r.concurrency,
                "held": len(r.held),
                "seen": round(time.time() - r.at, 1),
            }
            for r in workers
        ],
        "queues": [(queue, queue_depth(queue)) for queue in queues],
        "throughput": _throughput(client),
        "waiting": waiting_overview(),
        "suspended": Tenant.objects.filter(is_active=False, is_template=False).count(),
        "failures": _failures(client),
        "nearest": _nearest_limits(),
        "alarm_percent": settings.BILLING_QUOTA_ALARM_PERCENT,
    }


def health_view(request: HttpRequest) -> HttpResponse:
    context = {
        **admin.site.each_context(request),
        "title": "Platform health",
        **health_context(),
    }
    return TemplateResponse(request, "admin/platform_health.html", context)
