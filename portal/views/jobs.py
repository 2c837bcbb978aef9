"""The jobs pages: the list with filters and bulk actions, a job's detail, cancel and retry.

Each action calls the service the API calls (jobs.services.transitions); the list and the detail
read through jobs.selectors. htmx asks the same URLs for their live part (request.htmx), which
stops asking once nothing on it can change any more.
"""

from __future__ import annotations

from urllib.parse import urlencode

from django.contrib import messages
from django.http import Http404, HttpRequest, HttpResponse, QueryDict
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.cache import patch_vary_headers
from django.views.decorators.http import require_POST

from jobs.models import FINAL_STATUSES, Job, JobStatus
from jobs.selectors import (
    BadCursor,
    job_cancellable,
    job_filtered,
    job_get,
    job_get_with_attempts,
    job_list,
    job_waiting_reason,
)
from jobs.services.transitions import JobStateError, job_cancel, job_retry
from portal.access import HtmxHttpRequest, portal_page
from portal.forms import BulkActionForm, JobFilterForm, JobIdForm

PAGE_SIZE = 50
# A bulk action acts on at most this many of the matching jobs per click, oldest first
# (each is one conditional UPDATE through the service); the page says when more remain.
BULK_LIMIT = 500
_FILTER_NAMES = (
    "status",
    "type",
    "schedule",
    "submitted_by",
    "created_after",
    "created_before",
    "q",
)


def _filter_query(data: QueryDict) -> str:
    return urlencode({name: data[name] for name in _FILTER_NAMES if data.get(name)})


@portal_page()
def job_list_view(request: HtmxHttpRequest) -> HttpResponse:
    if request.GET.get("id"):
        id_form = JobIdForm(request.GET)
        if id_form.is_valid() and job_get(job_id=str(id_form.cleaned_data["id"])) is not None:
            return redirect("portal:job_detail", job_id=id_form.cleaned_data["id"])
        if id_form.is_valid():
            id_form.add_error("id", "No job of this tenant has this id.")
    else:
        id_form = JobIdForm()
    form = JobFilterForm(request.GET)
    page = None
    status = 200
    if form.is_valid():
        try:
            page = job_list(
                filters=form.filters(), limit=PAGE_SIZE, cursor=request.GET.get("cursor") or None
            )
        except BadCursor:
            form.add_error(None, "This page link is not valid any more; start from the first page.")
    if page is None or id_form.errors:
        status = 400
    unfinished = page is not None and any(job.status not in FINAL_STATUSES for job in page.items)
    filter_query = _filter_query(request.GET)
    context = {
        "form": form,
        "id_form": id_form,
        "page": page,
        "live": unfinished,
        "filter_query": filter_query,
        "next_url": (
            f"?{filter_query}&cursor={page.next_cursor}".replace("?&", "?")
            if page is not None and page.next_cursor
            else None
        ),
        "bulk_limit": BULK_LIMIT,
        "job_base": reverse("portal:jobs"),
    }
    template = "portal/jobs/_job_rows.html" if request.htmx else "portal/jobs/list.html"
    return _varies_by_htmx(render(request, template, context, status=status))


def _varies_by_htmx(response: HttpResponse) -> HttpResponse:
    # The same URL answers a fragment to htmx and a page to everyone else: caches must tell.
    patch_vary_headers(response, ("HX-Request",))
    return response


def _detail_context(job_id: str) -> dict[str, object]:
    detail = job_get_with_attempts(job_id=job_id)
    if detail is None:
        raise Http404("No such job.")
    return {
        "job": detail.job,
        "attempts": detail.attempts,
        "reason": job_waiting_reason(job=detail.job),
        "live": not detail.job.is_final,
        # A running job whose type cannot be stopped (email.send) offers no Cancel: it would be
        # refused.
        "cancellable": job_cancellable(job=detail.job),
        "retryable": detail.job.status in (JobStatus.FAILED, JobStatus.CANCELLED),
    }


@portal_page()
def job_detail_view(request: HtmxHttpRequest, job_id: str) -> HttpResponse:
    context = _detail_context(job_id)
    template = "portal/jobs/_job_live.html" if request.htmx else "portal/jobs/detail.html"
    return _varies_by_htmx(render(request, template, context))


def _job_or_404(job_id: str) -> Job:
    job = job_get(job_id=job_id)
    if job is None:
        raise Http404("No such job.")
    return job


_ACTIONS = {
    "cancel": (job_cancel, "The job was cancelled."),
    "retry": (job_retry, "The job was queued again; its earlier attempts stay below."),
}


def _job_action(request: HttpRequest, job_id: str, action: str) -> HttpResponse:
    job = _job_or_404(job_id)
    service, done = _ACTIONS[action]
    try:
        service(job=job)
        messages.success(request, done)
    except JobStateError as exc:
        messages.error(request, str(exc))
    return redirect("portal:job_detail", job_id=job.id)


@require_POST
@portal_page()
def job_cancel_view(request: HttpRequest, job_id: str) -> HttpResponse:
    return _job_action(request, job_id, "cancel")


@require_POST
@portal_page()
def job_retry_view(request: HttpRequest, job_id: str) -> HttpResponse:
    return _job_action(request, job_id, "retry")


@require_POST
@portal_page()
def job_bulk_view(request: HttpRequest) -> HttpResponse:
    """Cancel or retry the jobs the list's filters match (up to BULK_LIMIT per request)."""
    action_form = BulkActionForm(request.POST)
    form = JobFilterForm(request.POST)
    back = reverse("portal:jobs") + "?" + _filter_query(request.POST)
    if not action_form.is_valid() or not form.is_valid():
        messages.error(request, "The bulk action or its filters were not valid; nothing changed.")
        return redirect(back)
    action = action_form.cleaned_data["action"]
    eligible = (
        [JobStatus.FAILED, JobStatus.CANCELLED]
        if action == "retry"
        else [JobStatus.SCHEDULED, JobStatus.QUEUED, JobStatus.RUNNING]
    )
    matching = job_filtered(form.filters()).filter(status__in=eligible).order_by("created_at", "id")
    done = refused = 0
    for job in matching[:BULK_LIMIT]:
        try:
            job_retry(job=job) if action == "retry" else job_cancel(job=job)
            done += 1
        except JobStateError:
            refused += 1  # it moved on meanwhile (finished, or someone else acted first)
    verb = "Retried" if action == "retry" else "Cancelled"
    text = f"{verb} {done} job{'s' if done != 1 else ''}."
    if refused:
        text += f" {refused} had changed state meanwhile and were left as they are."
    if matching.count() > 0 and done + refused == BULK_LIMIT:
        text += f" At most {BULK_LIMIT} are handled at once: repeat for the rest."
    messages.success(request, text)
    return redirect(back)
