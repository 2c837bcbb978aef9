"""Signing in and out, changing, resetting and first setting a password.

Django's auth views do the work (tenant users are auth users in the tenant's schema); these
add the tenant check, the throttle, and the portal's templates.
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib.auth import login, logout
from django.contrib.auth import views as auth_views
from django.contrib.auth.forms import AuthenticationForm, SetPasswordForm
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import redirect, render
from django.urls import reverse_lazy
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_protect
from django.views.decorators.debug import sensitive_post_parameters
from django.views.decorators.http import require_POST

from portal import throttle
from portal.access import SESSION_TENANT, host_tenant, portal_page


class EmailLoginForm(AuthenticationForm):
    """Tenant users sign in with their email, which is also their username."""

    username = forms.CharField(
        label="Email",
        max_length=254,
        widget=forms.EmailInput(attrs={"autofocus": True, "autocomplete": "email"}),
    )
    error_messages = {
        **AuthenticationForm.error_messages,
        "invalid_login": "The email or the password is not right.",
    }


def _client_address(request: HttpRequest) -> str:
    # REMOTE_ADDR as gunicorn sees it; behind a proxy, deploy/ sets it from the forwarded header.
    return str(request.META.get("REMOTE_ADDR", "unknown"))


@sensitive_post_parameters("password")
@csrf_protect
@never_cache
def login_view(request: HttpRequest) -> HttpResponse:
    tenant = host_tenant(request)
    next_url = request.POST.get("next") or request.GET.get("next") or ""
    if not url_has_allowed_host_and_scheme(next_url, allowed_hosts={request.get_host()}):
        next_url = ""
    form = EmailLoginForm(request, data=request.POST if request.method == "POST" else None)
    status = 200
    refusal = ""
    if request.method == "POST":
        keys = throttle.login_keys(
            tenant_id=tenant.pk,
            email=request.POST.get("username", ""),
            address=_client_address(request),
        )
        if throttle.login_blocked(keys):
            form = EmailLoginForm(request, initial={"username": request.POST.get("username", "")})
            refusal = "Too many failed sign-ins for this account or address. Try again later."
            status = 429
        elif form.is_valid():
            login(request, form.get_user())
            request.session[SESSION_TENANT] = tenant.pk
            throttle.login_succeeded(keys)
            return HttpResponseRedirect(next_url or reverse_lazy("portal:dashboard"))
        else:
            throttle.login_failed(keys)
            status = 400
    return render(
        request,
        "portal/account/login.html",
        {"form": form, "next": next_url, "tenant": tenant, "refusal": refusal},
        status=status,
    )


@require_POST
def logout_view(request: HttpRequest) -> HttpResponse:
    logout(request)
    return redirect("portal:login")


class _TenantPasswordMixin:
    """The reset views need the host's tenant: on the public host they are 404s."""

    def dispatch(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        host_tenant(request)
        response: HttpResponse = super().dispatch(request, *args, **kwargs)  # type: ignore[misc]
        return response


class PasswordResetView(_TenantPasswordMixin, auth_views.PasswordResetView):
    template_name = "portal/account/password_reset.html"
    email_template_name = "portal/account/password_reset_email.txt"
    subject_template_name = "portal/account/password_reset_subject.txt"
    success_url = reverse_lazy("portal:password_reset_done")


class PasswordResetDoneView(_TenantPasswordMixin, auth_views.PasswordResetDoneView):
    template_name = "portal/account/password_reset_done.html"


class PasswordResetConfirmView(_TenantPasswordMixin, auth_views.PasswordResetConfirmView):
    """Also the invitation link: an invited user has no usable password yet, and the token dies
    once a password is set (it hashes the stored password)."""

    template_name = "portal/account/password_set.html"
    form_class = SetPasswordForm
    success_url = reverse_lazy("portal:dashboard")
    post_reset_login = True

    def form_valid(self, form: SetPasswordForm) -> HttpResponse:  # type: ignore[type-arg]
        response = super().form_valid(form)
        self.request.session[SESSION_TENANT] = host_tenant(self.request).pk
        return response


class PasswordChangeView(auth_views.PasswordChangeView):
    template_name = "portal/account/password_change.html"
    success_url = reverse_lazy("portal:password_change_done")


password_change = portal_page()(PasswordChangeView.as_view())


@portal_page()
def password_change_done(request: HttpRequest) -> HttpResponse:
    return render(request, "portal/account/password_change_done.html")
