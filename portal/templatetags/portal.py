"""Small display helpers for the portal's templates."""

from __future__ import annotations

import json
from typing import Any

from django import forms, template

register = template.Library()

_SECTIONS = {
    "dashboard": "dashboard",
    "jobs": "jobs",
    "job_detail": "jobs",
    "catalogue": "submit",
    "submit": "submit",
    "schedules": "schedules",
    "schedule_types": "schedules",
    "schedule_create": "schedules",
    "schedule_detail": "schedules",
    "schedule_edit": "schedules",
    "keys": "keys",
    "usage": "usage",
    "invoices": "usage",
    "users": "users",
}


@register.filter
def nav_section(url_name: str | None) -> str:
    """The main navigation's entry a page belongs to (marked aria-current)."""
    return _SECTIONS.get(url_name or "", "")


@register.filter
def percent(share: float | None) -> str:
    return "\u2013" if share is None else f"{share * 100:.1f} %"


@register.filter
def seconds(value: float | None) -> str:
    """A duration for people: 850 ms, 12.3 s, 4 min 10 s."""
    if value is None:
        return "\u2013"
    if value < 1:
        return f"{value * 1000:.0f} ms"
    if value < 60:
        return f"{value:.1f} s"
    minutes, rest = divmod(int(value), 60)
    return f"{minutes} min {rest} s"


@register.filter
def pretty_json(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=True)


@register.filter
def split(names: str) -> list[str]:
    return names.split()


@register.filter
def field(form: forms.Form, name: str) -> forms.BoundField:
    """A form's field by name, for templates that lay out fields in groups."""
    return form[name]
