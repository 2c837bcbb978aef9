"""Submitting a job from the catalogue with a form made from the job type's schema.

The same admission (submit rate) and submission service as POST /api/v1/jobs; the portal's
submitter is recorded as `user:<id>`.
"""

from __future__ import annotations

from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render

from jobs.catalogue import JobArgsError, UnknownJobType, catalogue, job_type_get
from jobs.selectors import job_get
from jobs.services.admission import SubmitRateExceeded, submission_admit
from jobs.services.submission import JobRequest, JobSubmitError, job_submit
from portal.access import host_tenant, portal_page
from portal.forms import SubmitOptionsForm
from portal.schema_form import fields_attach_errors, fields_fill, fields_parse, schema_fields


@portal_page()
def catalogue_view(request: HttpRequest) -> HttpResponse:
    job_types = [catalogue()[name] for name in sorted(catalogue())]
    return render(request, "portal/submit/catalogue.html", {"job_types": job_types})


@portal_page()
def submit_view(request: HttpRequest, type_name: str) -> HttpResponse:
    try:
        job_type = job_type_get(type_name)
    except UnknownJobType:
        raise Http404("No such job type.") from None
    fields = schema_fields(job_type)
    errors: list[str] = []
    options = SubmitOptionsForm(request.POST if request.method == "POST" else None)
    status = 200
    if request.method == "GET" and request.GET.get("from"):
        # "Run again with edited arguments": another job of this tenant, or a 404.
        source = job_get(job_id=request.GET["from"])
        if source is None or source.type != job_type.name:
            raise Http404("No such job.")
        fields_fill(fields, source.args)
    if request.method == "POST":
        args = fields_parse(fields, request.POST)
        if args is not None and options.is_valid():
            try:
                submission_admit(
                    tenant_id=host_tenant(request).pk, jobs=1, idempotency_key=None, batch=False
                )
                job = job_submit(
                    request=JobRequest(
                        type=job_type.name,
                        args=args,
                        priority=options.cleaned_data.get("priority"),
                        delay_seconds=options.cleaned_data.get("delay_seconds") or None,
                    ),
                    submitted_by=f"user:{request.user.pk}",
                )
                return redirect("portal:job_detail", job_id=job.id)
            except JobArgsError as exc:
                errors = fields_attach_errors(fields, exc.details)
            except SubmitRateExceeded as exc:
                errors = [f"{exc} Nothing was submitted; try again in {exc.retry_after} s."]
            except JobSubmitError as exc:
                errors = [str(exc)]
        status = 400
    return render(
        request,
        "portal/submit/form.html",
        {"job_type": job_type, "fields": fields, "options": options, "errors": errors},
        status=status,
    )
