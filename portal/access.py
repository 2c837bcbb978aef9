"""Who may see a portal page: a signed-in user of the host's tenant, and for some pages an admin.

Sessions live in the tenant's own schema and their cookies are host-only, so a session is only
ever found on the host that made it; the session also records its tenant, checked here, so that
even a session table copied between schemas would not let a user in elsewhere.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any

from django.contrib.auth import logout
from django.contrib.auth.views import redirect_to_login
from django.http import Http404, HttpRequest, HttpResponseBase
from django.shortcuts import render
from django_htmx.middleware import HtmxDetails

from tenants.models import Tenant

SESSION_TENANT = "portal_tenant_id"

View = Callable[..., HttpResponseBase]


def host_tenant(request: HttpRequest) -> Tenant:
    """The tenant whose host this is; the public host has no portal (404)."""
    tenant = getattr(request, "tenant", None)
    if not isinstance(tenant, Tenant):
        raise Http404("The portal lives on a tenant's host.")
    return tenant


def portal_page(*, admin: bool = False) -> Callable[[View], View]:
    """Require a signed-in user of this host's tenant; `admin` pages answer members 403."""

    def decorate(view: View) -> View:
        @wraps(view)
        def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
            tenant = host_tenant(request)
            user = request.user
            if not user.is_authenticated or request.session.get(SESSION_TENANT) != tenant.pk:
                if user.is_authenticated:
                    logout(request)
                return redirect_to_login(request.get_full_path())
            if admin and not user.is_staff:
                return render(request, "portal/403.html", status=403)
            return view(request, *args, **kwargs)

        return wrapper

    return decorate


class HtmxHttpRequest(HttpRequest):
    """A request as HtmxMiddleware leaves it (django-htmx's own advice for typing views)."""

    htmx: HtmxDetails
