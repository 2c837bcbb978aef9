from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render

from portal import selectors
from portal.access import host_tenant, portal_page


def home(request: HttpRequest) -> HttpResponse:
    """`/`: the dashboard, or the sign-in page for anonymous visitors."""
    return redirect("portal:dashboard")


@portal_page()
def dashboard_view(request: HttpRequest) -> HttpResponse:
    tenant = host_tenant(request)
    figures = selectors.day_figures_cached(tenant.pk)
    running = selectors.running_jobs()
    chart = {
        # Unix seconds, as uPlot's time axis wants them.
        "x": [int(hour.timestamp()) for hour in figures.hours],
        "series": [
            {"label": "succeeded", "values": figures.hourly_succeeded},
            {"label": "failed", "values": figures.hourly_failed},
            {"label": "other", "values": figures.hourly_other},
        ],
    }
    context = {
        "figures": figures,
        "statuses": list(figures.by_status.items()),
        "chart": chart,
        "chart_rows": list(
            zip(figures.hours, figures.hourly_succeeded, figures.hourly_failed, strict=True)
        ),
        "running": running,
        "waiting": selectors.waiting_jobs_cached(tenant.pk),
        "failures": selectors.recent_failures(),
        "limits": selectors.nearest_limits(tenant.pk),
    }
    return render(request, "portal/dashboard.html", context)
