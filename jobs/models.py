"""Tenant-schema models. The Job row is the source of truth; Redis is only transport."""

from __future__ import annotations

import uuid

from django.contrib.postgres.fields import ArrayField
from django.contrib.postgres.indexes import GinIndex, OpClass
from django.db import models
from django.db.models import Q, TextField
from django.db.models.functions import Cast, Upper
from django.utils import timezone
from django.utils.timezone import now as _now


class JobStatus(models.TextChoices):
    SCHEDULED = "scheduled"  # waits in this table until run_at, then is published
    QUEUED = "queued"  # committed and (about to be) published to the broker
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


FINAL_STATUSES = (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED)


class AttemptCause(models.TextChoices):
    """Why an attempt happened. Whoever requeues a job says why; the claim copies it."""

    SUBMITTED = "submitted"  # the first attempt
    RETRY = "retry"  # the runner's automatic retry after a failure
    USER_RETRY = "user_retry"  # POST /jobs/{id}/retry
    REDELIVERED = "redelivered"  # the broker redelivered the message after its worker was lost
    RESCUED = "rescued"  # the reconciler requeued a job whose worker died or went silent


class AttemptOutcome(models.TextChoices):
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    RETRYING = "retrying"  # failed, and another attempt follows
    LOST = "lost"  # its worker died, or its end was never recorded
    TIMED_OUT = "timed_out"  # killed at the hard time limit
    CANCELLED = "cancelled"


class Job(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    type = models.CharField(max_length=100)
    args = models.JSONField(default=dict)
    status = models.CharField(max_length=16, choices=JobStatus.choices, default=JobStatus.QUEUED)
    priority = models.PositiveSmallIntegerField(default=5)
    queue = models.CharField(max_length=100)
    # Every attempt the job ever had (JobAttempt keeps each one); a user's retry adds to it and
    # raises max_attempts by the job type's budget, so the count is never reset.
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
    # The schedule that made it. No database constraint and no cascade: a job outlives its
    # schedule and keeps naming it (as `submitted_by` does).
    schedule = models.ForeignKey(
        "jobs.Schedule",
        null=True,
        blank=True,
        on_delete=models.DO_NOTHING,
        db_constraint=False,
        db_index=False,
        related_name="+",
    )
    # NULL, not "", for "no key": the unique constraint below only covers rows that have one.
    idempotency_key = models.CharField(max_length=255, null=True, blank=True)  # noqa: DJ001
    request_hash = models.CharField(max_length=64, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    run_at = models.DateTimeField(null=True, blank=True)
    # When the job last became runnable: submitted, run_at for a delayed job, the end of a
    # retry's countdown, or the moment a user or the reconciler requeued it. The claim copies it
    # to the attempt, so an attempt's wait for a worker is started_at - queued_at.
    queued_at = models.DateTimeField(default=timezone.now)
    # The cause of the next (or current) attempt; the claim copies it to the attempt row.
    attempt_cause = models.CharField(
        max_length=16, choices=AttemptCause.choices, default=AttemptCause.SUBMITTED
    )
    published_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    # Where the current attempt runs: "<incarnation>:<pid>" and the schema the database saw.
    worker = models.CharField(max_length=255, blank=True)
    ran_in_schema = models.CharField(max_length=63, blank=True)
    # A workflow's step (1-based position): made when the previous step succeeded
    # (jobs.services.workflows), never before, so nothing waits in the table on another job.
    workflow = models.ForeignKey(
        "Workflow", null=True, blank=True, on_delete=models.PROTECT, related_name="jobs"
    )
    position = models.PositiveSmallIntegerField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            # The API's list: newest first, cursor on (created_at, id).
            models.Index(fields=["-created_at", "-id"], name="job_newest_idx"),
            models.Index(fields=["status", "-created_at"], name="job_status_newest_idx"),
            # The results backend finds a job by the Celery task id of its current attempt.
            models.Index(fields=["task_id"], name="job_task_id_idx"),
            # The dispatcher: scheduled jobs of a queue as they come due, and the next one's time.
            models.Index(
                fields=["queue", "run_at", "id"],
                name="job_scheduled_due_idx",
                condition=Q(status="scheduled"),
            ),
            # The dispatcher: a tenant's waiting jobs of a queue and type, in the order they are
            # sent (one short scan per type: jobs.services.dispatch).
            models.Index(
                "queue",
                "type",
                models.F("priority").desc(),
                "created_at",
                "id",
                name="job_waiting_idx",
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
            # The reconciler's full sweeps: workflow steps that ended lately, to find a success
            # recorded without its next step (jobs.services.workflows.workflows_advance_stranded).
            models.Index(
                fields=["finished_at"],
                name="job_workflow_finished_idx",
                condition=Q(workflow__isnull=False),
            ),
            # The portal's "arguments contain" search (jobs.selectors.job_filtered): trigrams of
            # the expression Django's icontains compares, UPPER(args::text), so a rare term is
            # found without walking a million rows. pg_trgm lives in public (migration 0009).
            GinIndex(
                OpClass(Upper(Cast("args", TextField())), name="gin_trgm_ops"),
                name="job_args_trgm_idx",
            ),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["idempotency_key"],
                name="job_idempotency_key_unique",
                condition=Q(idempotency_key__isnull=False),
            ),
            # One job per step, ever: advancing a workflow twice (a redelivered success) makes
            # nothing. Also the index of a workflow's jobs (GET /workflows/{id}, the advance).
            models.UniqueConstraint(
                fields=["workflow", "position"],
                name="job_workflow_position_unique",
                condition=Q(workflow__isnull=False),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.type} {self.id} ({self.status})"

    @property
    def is_final(self) -> bool:
        return self.status in FINAL_STATUSES


class JobAttempt(models.Model):
    """One attempt of a job: history, never rewritten once it has ended (DESIGN.md, "Attempts are
    history"). The claim inserts it and every end of an attempt updates it in the same statement
    as the Job row (jobs.services.transitions)."""

    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="attempt_rows")
    # 1-based, counted over the job's whole life: a user's retry continues the numbering.
    number = models.PositiveIntegerField()
    task_id = models.UUIDField()
    # "<incarnation>:<pid>", as Job.worker.
    worker = models.CharField(max_length=255)
    cause = models.CharField(max_length=16, choices=AttemptCause.choices)
    outcome = models.CharField(
        max_length=16, choices=AttemptOutcome.choices, default=AttemptOutcome.RUNNING
    )
    queued_at = models.DateTimeField()
    started_at = models.DateTimeField()
    finished_at = models.DateTimeField(null=True, blank=True)
    error = models.TextField(blank=True)
    traceback = models.TextField(blank=True)

    class Meta:
        ordering = ["job_id", "number"]
        constraints = [
            # Also the index every reader uses: the timeline and attempts_log (a job's attempts
            # in order) and each end of an attempt (a job's running attempt).
            models.UniqueConstraint(fields=["job", "number"], name="job_attempt_number_unique"),
        ]

    def __str__(self) -> str:
        return f"attempt {self.number} of {self.job_id} ({self.outcome})"

    @property
    def duration_seconds(self) -> float | None:
        if self.finished_at is None:
            return None
        return (self.finished_at - self.started_at).total_seconds()


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


class WorkflowStatus(models.TextChoices):
    """Derived, never stored: from the step jobs and the cancel request (Workflow.status_of), so
    that no end of a job (a worker, the reconciler, a user's cancel or retry of one step's job)
    can leave it disagreeing with its steps."""

    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


class Workflow(models.Model):
    """A chain of catalogue job types: each step runs after the previous one succeeded, with its
    result as `input` (jobs.services.workflows)."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    step_count = models.PositiveSmallIntegerField()
    submitted_by = models.CharField(max_length=100)
    # NULL, not "", for "no key"; a key space of its own, apart from jobs' and batches'.
    idempotency_key = models.CharField(max_length=255, null=True, blank=True, unique=True)
    request_hash = models.CharField(max_length=64, blank=True)
    # Set by a cancel, cleared by a retry: a step that succeeds meanwhile starts no next one.
    cancelled_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"workflow {self.id} ({self.step_count} steps)"

    def status_of(self, last_job: Job | None) -> WorkflowStatus:
        """The status, given the job of the furthest step reached (each step has at most one)."""
        if last_job is None or last_job.status not in FINAL_STATUSES:
            return WorkflowStatus.RUNNING
        if last_job.status == JobStatus.FAILED:
            return WorkflowStatus.FAILED
        if last_job.status == JobStatus.CANCELLED:
            return WorkflowStatus.CANCELLED
        if last_job.position == self.step_count:
            return WorkflowStatus.SUCCEEDED
        # A step succeeded and the next one was not made: only a cancel stops a chain there.
        return WorkflowStatus.CANCELLED if self.cancelled_at else WorkflowStatus.RUNNING


class WorkflowStep(models.Model):
    """A step as submitted: its job type and arguments (without `input`, which the step's job
    gets from the previous step's result)."""

    workflow = models.ForeignKey(Workflow, on_delete=models.CASCADE, related_name="steps")
    position = models.PositiveSmallIntegerField()  # 1-based
    type = models.CharField(max_length=100)
    args = models.JSONField(default=dict)

    class Meta:
        ordering = ["workflow_id", "position"]
        constraints = [
            models.UniqueConstraint(
                fields=["workflow", "position"], name="workflow_step_position_unique"
            ),
        ]

    def __str__(self) -> str:
        return f"step {self.position} of {self.workflow_id}: {self.type}"


class MissedRuns(models.TextChoices):
    """What a schedule does about occurrences that passed while nothing could run them (the
    beat was down, the tenant suspended)."""

    RUN_ONCE = "run_once"  # the latest missed occurrence runs once, if within the catch-up window
    SKIP = "skip"  # missed occurrences are dropped; the next one on time runs


class Overlap(models.TextChoices):
    """What an occurrence does while the schedule's previous job has not finished."""

    ALLOW = "allow"  # run anyway (Celery beat's own behaviour)
    SKIP = "skip"  # this occurrence is recorded as skipped
    BUFFER_ONE = "buffer_one"  # wait for the previous job, then run; later ones meanwhile skip


class Schedule(models.Model):
    """A tenant's periodic job: the policy beside django-celery-beat's PeriodicTask.

    The timing (interval, crontab with its time zone, clocked one-off) and `enabled` live on the
    PeriodicTask, as django-celery-beat keeps them; what to run (a catalogue job type and its
    validated arguments) and the policies live here. The tenant-aware beat
    (jobs.beat.scheduler) reads both.
    """

    # DO_NOTHING, not CASCADE: django-celery-beat's tables are in every schema but this one only
    # in tenants', and a cascade would make deleting a platform PeriodicTask in the public schema
    # (the operator admin) look for jobs_schedule there. The schedule service deletes both rows.
    periodic_task = models.OneToOneField(
        "django_celery_beat.PeriodicTask", on_delete=models.DO_NOTHING, related_name="job_schedule"
    )
    name = models.CharField(max_length=200, unique=True)
    type = models.CharField(max_length=100)
    args = models.JSONField(default=dict)
    # The zone in which the schedule's times are shown and, for cron, read.
    timezone = models.CharField(max_length=64, default="UTC")
    # Interval schedules fire at anchor + k * interval: every beat computes the same due times,
    # which is what makes (schedule, due_at) a key two beats agree on.
    anchor = models.DateTimeField(default=_now)
    missed_runs = models.CharField(
        max_length=16, choices=MissedRuns.choices, default=MissedRuns.RUN_ONCE
    )
    catch_up_seconds = models.PositiveIntegerField(default=3600)
    overlap = models.CharField(max_length=16, choices=Overlap.choices, default=Overlap.ALLOW)
    jitter_seconds = models.PositiveIntegerField(default=0)
    # Sentry Crons: "" for none. Sentry sees it as "<tenant slug>-<monitor_slug>"
    # (jobs.schedules.monitors), so one tenant cannot check in on another's monitor.
    monitor_slug = models.CharField(max_length=50, blank=True, default="")
    # The nominal time of the last occurrence the beat handled (ran, skipped or buffered).
    last_due_at = models.DateTimeField(null=True, blank=True)
    last_job = models.ForeignKey(
        Job, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["id"]
        constraints = [
            # Two schedules checking in on one monitor would close each other's check-ins.
            models.UniqueConstraint(
                fields=["monitor_slug"],
                condition=~models.Q(monitor_slug=""),
                name="jobs_schedule_monitor_slug_unique",
            )
        ]

    def __str__(self) -> str:
        return f"schedule {self.id} {self.name}"


class ScheduleRunOutcome(models.TextChoices):
    SUBMITTED = "submitted"
    SKIPPED_OVERLAP = "skipped_overlap"
    BUFFERED = "buffered"  # waits for the previous job; becomes submitted when it ends
    FAILED = "failed"  # the submission was refused (job type gone, arguments no longer valid)


class ScheduleRun(models.Model):
    """One occurrence of a schedule, recorded once: the unique (schedule, due_at) is what keeps a
    restarted beat, or two beats at the edge of the lease, from running an occurrence twice."""

    schedule = models.ForeignKey(Schedule, on_delete=models.CASCADE, related_name="runs")
    due_at = models.DateTimeField()
    outcome = models.CharField(max_length=16, choices=ScheduleRunOutcome.choices)
    job = models.ForeignKey(Job, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    error = models.TextField(blank=True)
    created_at = models.DateTimeField(default=_now)

    class Meta:
        ordering = ["schedule_id", "-due_at"]
        constraints = [
            # Also the index the schedule document's "last run" and the buffered check read.
            models.UniqueConstraint(fields=["schedule", "due_at"], name="schedule_run_once"),
        ]

    def __str__(self) -> str:
        return f"{self.schedule_id} at {self.due_at.isoformat()} ({self.outcome})"
