"""The portal's forms. Each one validates on the server what the browser was already told
(required, lengths, choices); a field's error is shown beside it."""

from __future__ import annotations

from dataclasses import asdict
from datetime import timedelta
from typing import Any

from django import forms
from django.utils import timezone

from jobs.catalogue import catalogue
from jobs.models import JobStatus, MissedRuns, Overlap
from jobs.schedules.services import (
    MAX_CATCH_UP_SECONDS,
    MAX_JITTER_SECONDS,
    ScheduleError,
    ScheduleSpec,
)
from jobs.schedules.timing import TimingError, wall_to_instant, zone_get
from jobs.selectors import JobFilters
from tenants.models import ApiKey


class DateTimeLocalInput(forms.DateTimeInput):
    input_type = "datetime-local"

    def __init__(self) -> None:
        super().__init__(format="%Y-%m-%dT%H:%M")


def _type_choices() -> list[tuple[str, str]]:
    return [("", "Any type")] + [(name, name) for name in sorted(catalogue())]


class JobFilterForm(forms.Form):
    status = forms.ChoiceField(required=False, choices=[("", "Any status"), *JobStatus.choices])
    type = forms.ChoiceField(required=False, choices=_type_choices)
    schedule = forms.IntegerField(required=False, min_value=1, label="Schedule id")
    submitted_by = forms.CharField(
        required=False,
        max_length=100,
        label="Submitted by",
        help_text="user:<id>, api_key:<key id> or schedule:<id>",
    )
    created_after = forms.DateTimeField(
        required=False, label="Submitted from", widget=DateTimeLocalInput()
    )
    created_before = forms.DateTimeField(
        required=False, label="Submitted before", widget=DateTimeLocalInput()
    )
    # Three characters at least: a shorter term has no trigram for job_args_trgm_idx to look up.
    q = forms.CharField(required=False, min_length=3, max_length=200, label="Arguments contain")

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        after, before = data.get("created_after"), data.get("created_before")
        if after and before and after >= before:
            self.add_error("created_before", "Must be later than “Submitted from”.")
        return data

    def filters(self) -> JobFilters:
        data = self.cleaned_data
        return JobFilters(
            status=data.get("status") or None,
            job_type=data.get("type") or None,
            submitted_by=data.get("submitted_by") or None,
            schedule_id=data.get("schedule"),
            created_after=data.get("created_after"),
            created_before=data.get("created_before"),
            args_contain=data.get("q") or None,
        )


class JobIdForm(forms.Form):
    id = forms.UUIDField(label="Job id", error_messages={"invalid": "Enter a job id (a UUID)."})


class BulkActionForm(forms.Form):
    action = forms.ChoiceField(choices=[("cancel", "Cancel"), ("retry", "Retry")])


class SubmitOptionsForm(forms.Form):
    """What every job has besides its arguments (the API's `priority` and `delay_seconds`)."""

    priority = forms.IntegerField(required=False, min_value=0, max_value=9, initial=5)
    delay_seconds = forms.FloatField(
        required=False, min_value=0, max_value=365 * 24 * 3600, label="Delay (seconds)"
    )


class ApiKeyForm(forms.Form):
    name = forms.CharField(max_length=100)
    scopes = forms.MultipleChoiceField(
        choices=[(scope, scope) for scope in ApiKey.SCOPES],
        widget=forms.CheckboxSelectMultiple,
        initial=list(ApiKey.SCOPES),
    )
    expires_in_days = forms.IntegerField(
        required=False, min_value=1, max_value=3650, label="Expires in (days)",
        help_text="Leave empty for a key that does not expire.",
    )  # fmt: skip

    def expires_at(self) -> Any:
        days = self.cleaned_data.get("expires_in_days")
        return timezone.now() + timedelta(days=days) if days else None


ROLE_CHOICES = [("member", "Member"), ("admin", "Admin")]


class InviteForm(forms.Form):
    email = forms.EmailField(max_length=254)
    role = forms.ChoiceField(choices=ROLE_CHOICES, initial="member")


class RoleForm(forms.Form):
    role = forms.ChoiceField(choices=ROLE_CHOICES)


TIMING_KINDS = [
    ("cron", "Cron expression"),
    ("interval", "Every so many seconds"),
    ("once", "Once, at a time"),
]
# The field each kind of timing is given in.
TIMING_FIELD = {"cron": "cron", "interval": "interval_seconds", "once": "run_at"}
# The form's fields that are the spec's as they are.
_AS_GIVEN = (
    "name", "timezone", "enabled", "missed_runs", "catch_up_seconds", "overlap", "jitter_seconds",
)  # fmt: skip


class ScheduleForm(forms.Form):
    """A schedule's name, timing and policies; its arguments are the job type's schema fields
    (portal.schema_form). Prefixed, so no job type's argument name can clash with these."""

    prefix = "schedule"

    name = forms.CharField(max_length=200)
    timing = forms.ChoiceField(
        choices=TIMING_KINDS, initial="cron", widget=forms.RadioSelect, label="Runs"
    )
    cron = forms.CharField(
        required=False,
        max_length=200,
        label="Cron expression",
        initial="0 * * * *",
        help_text="minute hour day-of-month month day-of-week, e.g. 30 2 * * mon-fri",
    )
    interval_seconds = forms.IntegerField(required=False, min_value=1, label="Every (seconds)")
    run_at = forms.DateTimeField(
        required=False,
        label="At (in the schedule's time zone)",
        widget=DateTimeLocalInput(),
    )
    timezone = forms.CharField(
        max_length=64,
        label="Time zone",
        help_text="An IANA name such as Europe/Berlin: the cron is read in it, times shown in it.",
        # The browser offers the names as one types (the form page's <datalist id=time-zones>);
        # the server still checks, as the API does.
        widget=forms.TextInput(attrs={"list": "time-zones", "autocomplete": "off"}),
    )
    enabled = forms.BooleanField(required=False, initial=True, label="Enabled")
    missed_runs = forms.ChoiceField(
        choices=MissedRuns.choices,
        label="Missed runs",
        help_text="While the beat was down: run the latest once (within the catch-up window), "
        "or skip.",
    )
    catch_up_seconds = forms.IntegerField(
        min_value=0, max_value=MAX_CATCH_UP_SECONDS, initial=3600, label="Catch-up window (s)"
    )
    overlap = forms.ChoiceField(
        choices=Overlap.choices,
        label="Overlap",
        help_text="While the previous job has not finished: run anyway, skip, or hold one.",
    )
    jitter_seconds = forms.IntegerField(
        min_value=0, max_value=MAX_JITTER_SECONDS, initial=0, label="Jitter (s)"
    )

    def clean_timezone(self) -> str:
        name: str = self.cleaned_data["timezone"].strip()
        try:
            zone_get(name)  # the service's own check, here so its message is beside the field
        except TimingError as exc:
            raise forms.ValidationError(str(exc)) from None
        return name

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        kind = data.get("timing")
        name = TIMING_FIELD.get(kind or "")
        if name and data.get(name) in (None, "") and name not in self.errors:
            self.add_error(name, "Required for this kind of timing.")
        return data

    def spec(self, *, job_type: str, args: dict[str, Any]) -> ScheduleSpec:
        data = self.cleaned_data
        kind = data["timing"]
        run_at = None
        if kind == "once":
            # The browser sends a wall time; Django read it as one in the current zone (UTC).
            wall = timezone.make_naive(data["run_at"])
            run_at = wall_to_instant(wall, zone_get(data["timezone"]))
        return ScheduleSpec(
            type=job_type,
            args=args,
            cron=" ".join(data["cron"].split()) if kind == "cron" else None,
            interval_seconds=data["interval_seconds"] if kind == "interval" else None,
            run_at=run_at,
            **{name: data[name] for name in _AS_GIVEN},
        )

    @classmethod
    def initial_of(cls, spec: ScheduleSpec) -> dict[str, Any]:
        """The form's initial values for a stored schedule (its edit page)."""
        kind = "cron" if spec.cron else "interval" if spec.interval_seconds else "once"
        run_at = None
        if spec.run_at is not None:
            run_at = spec.run_at.astimezone(zone_get(spec.timezone)).replace(tzinfo=None)
        return {**asdict(spec), "timing": kind, "cron": spec.cron or "", "run_at": run_at}

    def add_service_error(self, exc: ScheduleError) -> None:
        """The service's refusal beside the field it concerns (the form checked the rest)."""
        field: str | None = None
        if exc.code in ("invalid_name", "name_taken"):
            field = "name"
        elif exc.code in ("invalid_timing", "interval_too_short"):
            field = "timezone" if "time zone" in str(exc) else TIMING_FIELD[self.data_kind()]
        elif exc.code == "invalid_policy":
            field = next((name for name in self.fields if str(exc).startswith(name)), None)
        self.add_error(field, str(exc))

    def data_kind(self) -> str:
        return str(self.cleaned_data.get("timing") or "cron")
