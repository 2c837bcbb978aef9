"""Tenant-schema models. The Job row is the source of truth; Redis is only transport."""

from __future__ import annotations

import uuid

from django.contrib.postgres.fields import ArrayField
from django.db import models
from django.db.models import Q


class JobStatus(models.TextChoices):
    SCHEDULED = "scheduled"  # waits in this table until run_at, then is published
    QUEUED = "queued"  # committed and (about to be) published to the broker
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


FINAL_STATUSES = (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED)


class Job(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    type = models.CharField(max_length=100)
    args = models.JSONField(default=dict)
    status = models.CharField(max_length=16, choices=JobStatus.choices, default=JobStatus.QUEUED)
    priority = models.PositiveSmallIntegerField(default=5)
    queue = models.CharField(max_length=100)
    attempts = models.PositiveIntegerField(default=0)
    max_attempts = models.PositiveIntegerField(default=3)
    # A lower hard time limit than the job type's, for this job only (operators, tests).
    time_limit_seconds = models.PositiveIntegerField(null=True, blank=True)
    # The Celery task id of the current attempt. A message whose id is not this one is stale
    # (the job was cancelled or retried since) and is dropped by the runner.
    task_id = models.UUIDField(default=uuid.uuid4)
    result = models.JSONField(null=True, blank=True)
    error = models.TextField(blank=True)
    progress = models.JSONField(null=True, blank=True)
    # Who asked: "api_key:<key id>", "user:<id>", "schedule:<id>", "operator".
    submitted_by = models.CharField(max_length=100)
    schedule_id = models.BigIntegerField(null=True, blank=True)
    # NULL, not "", for "no key": the unique constraint below only covers rows that have one.
    idempotency_key = models.CharField(max_length=255, null=True, blank=True)  # noqa: DJ001
    request_hash = models.CharField(max_length=64, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    run_at = models.DateTimeField(null=True, blank=True)
    published_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    # Where the current attempt runs: "<hostname>:<pid>" and the schema the database saw.
    worker = models.CharField(max_length=255, blank=True)
    ran_in_schema = models.CharField(max_length=63, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            # The API's list: newest first, cursor on (created_at, id).
            models.Index(fields=["-created_at", "-id"], name="job_newest_idx"),
            models.Index(fields=["status", "-created_at"], name="job_status_newest_idx"),
            # The results backend finds a job by the Celery task id of its current attempt.
            models.Index(fields=["task_id"], name="job_task_id_idx"),
            # The releaser: scheduled jobs that are due.
            models.Index(
                fields=["run_at"],
                name="job_scheduled_due_idx",
                condition=Q(status="scheduled"),
            ),
            # The reconciler: committed but never published (Redis was down at submit time).
            models.Index(
                fields=["created_at"],
                name="job_unpublished_idx",
                condition=Q(status="queued", published_at__isnull=True),
            ),
            # The reconciler: queued jobs published a while ago, oldest first (lost messages).
            models.Index(
                fields=["published_at"],
                name="job_queued_published_idx",
                condition=Q(status="queued"),
            ),
            # The reconciler: running jobs, oldest first (dead workers, unrecorded ends).
            models.Index(
                fields=["started_at"], name="job_running_idx", condition=Q(status="running")
            ),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["idempotency_key"],
                name="job_idempotency_key_unique",
                condition=Q(idempotency_key__isnull=False),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.type} {self.id} ({self.status})"

    @property
    def is_final(self) -> bool:
        return self.status in FINAL_STATUSES


class JobBatch(models.Model):
    """A batch submitted with an Idempotency-Key: replaying the key returns the same jobs.

    Batches without a key leave no row. The key space is the batches' own, apart from single
    jobs' keys.
    """

    idempotency_key = models.CharField(max_length=255, unique=True)
    request_hash = models.CharField(max_length=64)
    # The batch's jobs in submission order.
    job_ids = ArrayField(models.UUIDField())
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"batch {self.idempotency_key} ({len(self.job_ids)} jobs)"
