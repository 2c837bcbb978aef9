"""Reads on jobs (in the active tenant's schema)."""

from __future__ import annotations

import base64
import binascii
import uuid
from dataclasses import dataclass
from datetime import datetime

from django.db.models import Q, QuerySet

from jobs.models import Job, JobAttempt


class BadCursor(ValueError):
    pass


def job_get(*, job_id: str) -> Job | None:
    try:
        key = uuid.UUID(job_id)
    except ValueError:
        return None  # not an id we could have issued: the same 404 as a missing one
    return Job.objects.filter(id=key).first()


def job_attempts(*, job_id: uuid.UUID | str) -> QuerySet[JobAttempt]:
    """A job's attempts, oldest first (the portal's timeline)."""
    return JobAttempt.objects.filter(job_id=job_id).order_by("number")


def cursor_encode(job: Job) -> str:
    raw = f"{job.created_at.isoformat()}|{job.id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def cursor_decode(cursor: str) -> tuple[datetime, uuid.UUID]:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        created, _, job_id = base64.urlsafe_b64decode(padded.encode()).decode().partition("|")
        when = datetime.fromisoformat(created)
        if when.tzinfo is None:
            raise ValueError("naive")
        return when, uuid.UUID(job_id)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise BadCursor("This cursor is not one the API returned.") from None


@dataclass(frozen=True)
class JobPage:
    items: list[Job]
    next_cursor: str | None


def job_list(
    *,
    status: str | None = None,
    job_type: str | None = None,
    limit: int = 50,
    cursor: str | None = None,
) -> JobPage:
    """Newest first, by (created_at, id), so pages are stable while new jobs arrive."""
    queryset: QuerySet[Job] = Job.objects.order_by("-created_at", "-id")
    if status:
        queryset = queryset.filter(status=status)
    if job_type:
        queryset = queryset.filter(type=job_type)
    if cursor:
        created_at, job_id = cursor_decode(cursor)
        queryset = queryset.filter(
            Q(created_at__lt=created_at) | Q(created_at=created_at, id__lt=job_id)
        )
    rows = list(queryset[: limit + 1])
    items = rows[:limit]
    next_cursor = cursor_encode(items[-1]) if len(rows) > limit else None
    return JobPage(items=items, next_cursor=next_cursor)
