"""Usage endpoint."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.http import HttpRequest
from ninja import Router, Schema

from billing.usage import tenant_usage

router = Router(tags=["usage"])


class UsageCounts(Schema):
    jobs: int
    run_seconds: float


class Limits(Schema):
    jobs_per_month: int
    submit_rate: str
    concurrency: int
    schedules: int
    min_interval_seconds: int
    rates: dict[str, str]


class UsageOut(Schema):
    plan: str
    period_start: datetime
    period_end: datetime
    usage: UsageCounts
    limits: Limits


@router.get("/usage", response=UsageOut, summary="This period's usage and the plan's limits")
def usage(request: HttpRequest) -> dict[str, Any]:
    # Any valid key may read its own tenant's usage.
    return tenant_usage(request.tenant)  # type: ignore[attr-defined]
