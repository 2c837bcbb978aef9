"""The portal's forms. Each one validates on the server what the browser was already told
(required, lengths, choices); a field's error is shown beside it."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django import forms
from django.utils import timezone

from jobs.catalogue import catalogue
from jobs.models import JobStatus
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
