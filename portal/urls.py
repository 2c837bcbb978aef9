"""The portal's URLs, on every tenant host (saas_platform.urls_tenant includes them)."""

from __future__ import annotations

from django.urls import URLPattern, path

from portal.views import account, admin_pages, dashboard, jobs, schedules, submit

app_name = "portal"

urlpatterns: list[URLPattern] = [
    path("", dashboard.home, name="home"),
    path("dashboard/", dashboard.dashboard_view, name="dashboard"),
    path("login/", account.login_view, name="login"),
    path("logout/", account.logout_view, name="logout"),
    path("password/change/", account.password_change, name="password_change"),
    path("password/change/done/", account.password_change_done, name="password_change_done"),
    path("password/reset/", account.PasswordResetView.as_view(), name="password_reset"),
    path(
        "password/reset/sent/",
        account.PasswordResetDoneView.as_view(),
        name="password_reset_done",
    ),
    # Both a reset link and an invitation: set a password, once.
    path(
        "password/set/<uidb64>/<token>/",
        account.PasswordResetConfirmView.as_view(),
        name="password_set",
    ),
    path("jobs/", jobs.job_list_view, name="jobs"),
    path("jobs/bulk/", jobs.job_bulk_view, name="jobs_bulk"),
    path("jobs/<str:job_id>/", jobs.job_detail_view, name="job_detail"),
    path("jobs/<str:job_id>/cancel/", jobs.job_cancel_view, name="job_cancel"),
    path("jobs/<str:job_id>/retry/", jobs.job_retry_view, name="job_retry"),
    path("submit/", submit.catalogue_view, name="catalogue"),
    path("submit/<str:type_name>/", submit.submit_view, name="submit"),
    path("schedules/", schedules.schedule_list_view, name="schedules"),
    path("schedules/new/", schedules.schedule_types_view, name="schedule_types"),
    path("schedules/new/<str:type_name>/", schedules.schedule_create_view, name="schedule_create"),
    path("schedules/<str:schedule_id>/", schedules.schedule_detail_view, name="schedule_detail"),
    path("schedules/<str:schedule_id>/edit/", schedules.schedule_edit_view, name="schedule_edit"),
    path(
        "schedules/<str:schedule_id>/pause/", schedules.schedule_pause_view, name="schedule_pause"
    ),
    path(
        "schedules/<str:schedule_id>/resume/",
        schedules.schedule_resume_view,
        name="schedule_resume",
    ),
    path(
        "schedules/<str:schedule_id>/delete/",
        schedules.schedule_delete_view,
        name="schedule_delete",
    ),
    path("keys/", admin_pages.keys_view, name="keys"),
    path("keys/<int:key_pk>/revoke/", admin_pages.key_revoke_view, name="key_revoke"),
    path("usage/", admin_pages.usage_view, name="usage"),
    path(
        "invoices/<int:invoice_pk>/<str:kind>/",
        admin_pages.invoice_download_view,
        name="invoice_download",
    ),
    path("users/", admin_pages.users_view, name="users"),
    path("users/<int:user_pk>/role/", admin_pages.user_role_view, name="user_role"),
    path("users/<int:user_pk>/remove/", admin_pages.user_remove_view, name="user_remove"),
]
