from __future__ import annotations

from billing.models import Plan

DEFAULT_PLAN_SLUG = "free"


def plan_get(*, slug: str) -> Plan:
    return Plan.objects.get(slug=slug)
