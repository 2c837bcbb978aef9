"""Pages for tenant admins only: API keys, users and roles, usage, plan and invoices (members get
403)."""

from __future__ import annotations

from datetime import timedelta

from django.contrib import messages
from django.contrib.auth import get_user_model
from django.contrib.auth.base_user import AbstractBaseUser
from django.contrib.auth.tokens import default_token_generator
from django.core.exceptions import ValidationError
from django.core.mail import send_mail
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils.encoding import force_bytes
from django.utils.http import urlsafe_base64_encode
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_POST

from billing.invoice_documents import (
    invoice_csv_response,
    invoice_pdf_response,
    invoice_print_response,
)
from billing.invoices import money
from billing.selectors import tenant_invoice_get, tenant_invoices
from portal import selectors
from portal.access import host_tenant, portal_page
from portal.forms import ApiKeyForm, InviteForm, RoleForm
from tenants.models import ApiKey
from tenants.services import apikey_create, apikey_revoke
from tenants.users import (
    LastAdminError,
    tenant_user_create,
    tenant_user_remove,
    tenant_user_set_role,
)


@never_cache  # the one response that carries a new key must not be kept by any cache
@portal_page(admin=True)
def keys_view(request: HttpRequest) -> HttpResponse:
    tenant = host_tenant(request)
    form = ApiKeyForm(request.POST if request.method == "POST" else None)
    created = None
    status = 200
    if request.method == "POST":
        if form.is_valid():
            try:
                created = apikey_create(
                    tenant=tenant,
                    name=form.cleaned_data["name"],
                    scopes=form.cleaned_data["scopes"],
                    expires_at=form.expires_at(),
                )
                form = ApiKeyForm()
            except ValidationError as exc:
                form.add_error(None, exc)
                status = 400
        else:
            status = 400
    keys = ApiKey.objects.filter(tenant=tenant).order_by("-created_at")
    return render(
        request,
        "portal/keys/list.html",
        {"form": form, "keys": keys, "created": created},
        status=status,
    )


@require_POST
@portal_page(admin=True)
def key_revoke_view(request: HttpRequest, key_pk: int) -> HttpResponse:
    # Only this tenant's keys: another tenant's key id is a 404, as if it did not exist.
    api_key = get_object_or_404(ApiKey, pk=key_pk, tenant=host_tenant(request))
    apikey_revoke(api_key=api_key)
    messages.success(request, f"The key “{api_key.name}” ({api_key.key_id}) was revoked.")
    return redirect("portal:keys")


@portal_page(admin=True)
def usage_view(request: HttpRequest) -> HttpResponse:
    tenant = host_tenant(request)
    usage = selectors.usage_document(tenant.pk)
    limits = selectors.nearest_limits(tenant.pk, usage=usage)
    rates = [
        (name, usage["limits"]["rates"][name], usage["limits"]["bursts"][name])
        for name in sorted(usage["limits"]["rates"])
    ]
    days = selectors.usage_days(tenant.pk, usage=usage)
    quota = usage["limits"]["jobs_per_month"]
    start = usage["period_start"]
    month = [start + timedelta(days=n) for n in range((usage["period_end"] - start).days)]
    so_far: list[int | None] = [row.total for row in days]
    chart = {
        # Unix seconds, as uPlot's time axis wants them: the whole month, so the quota's line
        # shows how far there is to go; the jobs' line stops today (null after).
        "x": [int(day.timestamp()) for day in month],
        "series": [
            {"label": "jobs this period", "values": so_far + [None] * (len(month) - len(so_far))},
            {"label": "monthly quota", "values": [quota] * len(month), "dash": True},
        ],
        "y_label": "jobs",
    }
    invoices = [
        (invoice, money(invoice.total_cents, invoice.currency))
        for invoice in tenant_invoices(tenant_id=tenant.pk)[:INVOICES_SHOWN]
    ]
    return render(
        request,
        "portal/usage.html",
        {
            "usage": usage,
            "limits": limits,
            "rates": rates,
            "invoices": invoices,
            "chart": chart,
            "days": days,
        },
    )


# Two years of months: a page, not a table that grows for ever.
INVOICES_SHOWN = 24
_INVOICE_DOCUMENTS = {
    "csv": invoice_csv_response,
    "pdf": invoice_pdf_response,
    "print": invoice_print_response,
}


@portal_page(admin=True)
def invoice_download_view(request: HttpRequest, invoice_pk: int, kind: str) -> HttpResponse:
    # Only this tenant's invoices: another's id is a 404, as if it did not exist.
    invoice = tenant_invoice_get(tenant_id=host_tenant(request).pk, invoice_id=invoice_pk)
    if invoice is None or kind not in _INVOICE_DOCUMENTS:
        raise Http404("No such invoice.")
    return _INVOICE_DOCUMENTS[kind](invoice)


def _invite_link(request: HttpRequest, user: AbstractBaseUser) -> str:
    uid = urlsafe_base64_encode(force_bytes(user.pk))
    token = default_token_generator.make_token(user)
    path = reverse("portal:password_set", kwargs={"uidb64": uid, "token": token})
    return request.build_absolute_uri(path)


@portal_page(admin=True)
def users_view(request: HttpRequest) -> HttpResponse:
    tenant = host_tenant(request)
    form = InviteForm(request.POST if request.method == "POST" else None)
    status = 200
    if request.method == "POST":
        if form.is_valid():
            try:
                user = tenant_user_create(
                    email=form.cleaned_data["email"],
                    password=None,  # unusable until they set one from the link
                    is_admin=form.cleaned_data["role"] == "admin",
                )
            except ValidationError as exc:
                form.add_error("email", exc)
                status = 400
            else:
                link = _invite_link(request, user)
                body = render_to_string(
                    "portal/users/invite_email.txt", {"tenant": tenant, "link": link}
                )
                send_mail(
                    f"You are invited to {tenant.name}'s jobs portal", body, None, [user.email]
                )
                messages.success(request, f"Invitation sent to {user.email}.")
                return redirect("portal:users")
        else:
            status = 400
    users = get_user_model().objects.order_by("email")
    return render(
        request,
        "portal/users/list.html",
        {"form": form, "users": users, "role_form": RoleForm()},
        status=status,
    )


@require_POST
@portal_page(admin=True)
def user_role_view(request: HttpRequest, user_pk: int) -> HttpResponse:
    user = get_object_or_404(get_user_model(), pk=user_pk)
    form = RoleForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Choose admin or member; nothing changed.")
        return redirect("portal:users")
    try:
        tenant_user_set_role(user=user, is_admin=form.cleaned_data["role"] == "admin")
        messages.success(request, f"{user.email} is now {form.cleaned_data['role']}.")
    except LastAdminError as exc:
        messages.error(request, exc.message)
    return redirect("portal:users")


@require_POST
@portal_page(admin=True)
def user_remove_view(request: HttpRequest, user_pk: int) -> HttpResponse:
    user = get_object_or_404(get_user_model(), pk=user_pk)
    try:
        tenant_user_remove(user=user)
        messages.success(request, f"{user.email} was removed.")
    except LastAdminError as exc:
        messages.error(request, exc.message)
    return redirect("portal:users")
