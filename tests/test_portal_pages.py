"""The portal's pages through Django's test client on the tenants' hosts (real PostgreSQL and
Redis): sign-in and its throttle, roles, forms refusing bad input, and tenant isolation."""

from __future__ import annotations

import re
import uuid

import pytest
from django.contrib.auth import get_user_model
from django.core import mail

from jobs.models import Job, JobAttempt, JobStatus
from tenants.models import ApiKey
from tenants.services import apikey_create
from tests.jobs_helpers import queued_job
from tests.portal_helpers import ACME, GLOBEX, portal_client

pytestmark = pytest.mark.usefixtures("tenant_db")

EVERY_PAGE = ["/dashboard/", "/jobs/", "/submit/", "/submit/demo.add/", "/password/change/"]
ADMIN_PAGES = ["/keys/", "/usage/", "/users/"]


def test_anonymous_visitors_to_the_root_end_up_at_the_login_form():
    client = portal_client(ACME)
    response = client.get("/", follow=True)
    assert response.redirect_chain[-1][0].startswith("/login/?next=")
    assert b"Sign in to Acme" in response.content


def test_every_page_renders_for_an_admin(tenant_db):
    client = portal_client(ACME, "alice@acme.example")
    for path in EVERY_PAGE + ADMIN_PAGES:
        response = client.get(path)
        assert response.status_code == 200, (path, response.content[:500])
        assert b"alice@acme.example" in response.content


def test_a_member_is_refused_the_admin_pages_and_sees_no_link_to_them():
    client = portal_client(ACME, "bob@acme.example")
    dashboard = client.get("/dashboard/").content.decode()
    for path in ADMIN_PAGES:
        assert f'href="{path}"' not in dashboard
        assert client.get(path).status_code == 403
    assert client.post("/keys/", {"name": "x", "scopes": ["jobs:read"]}).status_code == 403
    for path in EVERY_PAGE:
        assert client.get(path).status_code == 200, path


def test_a_wrong_password_is_refused_with_a_message_and_no_session():
    client = portal_client(ACME)
    response = client.post("/login/", {"username": "alice@acme.example", "password": "nope"})
    assert response.status_code == 400
    assert b"The email or the password is not right." in response.content
    assert client.get("/dashboard/").status_code == 302


def test_a_user_of_another_tenant_cannot_sign_in_here():
    client = portal_client(ACME)
    response = client.post(
        "/login/", {"username": "carol@globex.example", "password": "carol-pw-1"}
    )
    assert response.status_code == 400


def test_sign_ins_are_throttled_per_account_then_refused_even_with_the_right_password(settings):
    client = portal_client(ACME, REMOTE_ADDR="10.9.8.7")
    email = f"throttle-{uuid.uuid4().hex[:8]}@acme.example"
    _user(email, "right-pw-1")
    for _ in range(settings.PORTAL_LOGIN_FAILURES_PER_ACCOUNT):
        assert client.post("/login/", {"username": email, "password": "x"}).status_code == 400
    blocked = client.post("/login/", {"username": email, "password": "right-pw-1"})
    assert blocked.status_code == 429
    assert b"Too many failed sign-ins" in blocked.content
    # Another address is refused too: the account's counter is what stops it.
    other = portal_client(ACME, REMOTE_ADDR="10.9.8.8")
    assert other.post("/login/", {"username": email, "password": "right-pw-1"}).status_code == 429
    # Other accounts from the first address still get in (it is under its own limit).
    assert (
        portal_client(ACME, REMOTE_ADDR="10.9.8.7")
        .post("/login/", {"username": "bob@acme.example", "password": "bob-pw-1"})
        .status_code
        == 302
    )


def test_sign_ins_are_throttled_per_address_across_accounts(settings):
    address = f"10.7.{uuid.uuid4().int % 250}.{uuid.uuid4().int % 250}"
    client = portal_client(ACME, REMOTE_ADDR=address)
    for n in range(settings.PORTAL_LOGIN_FAILURES_PER_ADDRESS):
        client.post("/login/", {"username": f"nobody{n}@acme.example", "password": "x"})
    refused = client.post("/login/", {"username": "bob@acme.example", "password": "bob-pw-1"})
    assert refused.status_code == 429


def _user(email: str, password: str | None, *, admin: bool = False):
    from tenants.models import Tenant
    from tenants.users import tenant_user_create

    with Tenant.objects.get(schema_name="acme"):
        return tenant_user_create(email=email, password=password, is_admin=admin)


def test_session_and_csrf_cookies_are_host_only():
    client = portal_client(ACME, "alice@acme.example")
    client.get("/keys/")
    session = client.cookies["sessionid"]
    assert session["domain"] == ""
    assert client.cookies["csrftoken"]["domain"] == ""
    # acme's session cookie, replayed on globex's host, is nobody there.
    thief = portal_client(GLOBEX)
    thief.cookies["sessionid"] = session.value
    assert thief.get("/dashboard/").status_code == 302


def test_password_reset_by_email_sets_a_new_password_once():
    email = f"reset-{uuid.uuid4().hex[:8]}@acme.example"
    _user(email, "old-pw-12")
    client = portal_client(ACME)
    mail.outbox.clear()
    assert client.post("/password/reset/", {"email": email}).status_code == 302
    assert len(mail.outbox) == 1
    link = re.search(r"http://acme\.localhost(/password/set/\S+/)", mail.outbox[0].body)
    assert link, mail.outbox[0].body
    form = client.get(link.group(1), follow=True)
    assert b"new_password1" in form.content
    set_url = form.redirect_chain[-1][0]
    done = client.post(set_url, {"new_password1": "new-pw-345", "new_password2": "new-pw-345"})
    assert done.status_code == 302
    assert client.get("/dashboard/").status_code == 200  # signed in by the link
    again = portal_client(ACME).get(link.group(1), follow=True)
    assert b"This link is not valid" in again.content
    assert (
        portal_client(ACME)
        .post("/login/", {"username": email, "password": "new-pw-345"})
        .status_code
        == 302
    )


def test_an_invited_user_sets_a_password_from_the_link_and_signs_in():
    admin = portal_client(ACME, "alice@acme.example")
    email = f"invitee-{uuid.uuid4().hex[:8]}@acme.example"
    mail.outbox.clear()
    response = admin.post("/users/", {"email": email, "role": "member"})
    assert response.status_code == 302
    path = re.search(r"http://acme\.localhost(/password/set/\S+/)", mail.outbox[0].body).group(1)
    invitee = portal_client(ACME)
    form = invitee.get(path, follow=True)
    set_url = form.redirect_chain[-1][0]
    assert (
        invitee.post(
            set_url, {"new_password1": "invited-pw-9", "new_password2": "invited-pw-9"}
        ).status_code
        == 302
    )
    assert invitee.get("/jobs/").status_code == 200
    assert invitee.get("/keys/").status_code == 403  # a member


def test_inviting_a_bad_or_existing_email_is_refused_next_to_the_field():
    admin = portal_client(ACME, "alice@acme.example")
    users_before = _count_users()
    bad = admin.post("/users/", {"email": "not an email", "role": "member"})
    assert bad.status_code == 400
    assert 'id="id_email_error"' in bad.content.decode()
    taken = admin.post("/users/", {"email": "bob@acme.example", "role": "member"})
    assert taken.status_code == 400
    assert "already exists" in taken.content.decode()
    assert _count_users() == users_before


def _count_users() -> int:
    from tenants.models import Tenant

    with Tenant.objects.get(schema_name="acme"):
        return get_user_model().objects.count()


def test_the_last_admin_cannot_demote_or_remove_themselves():
    admin = portal_client(ACME, "alice@acme.example")
    from tenants.models import Tenant

    with Tenant.objects.get(schema_name="acme"):
        alice = get_user_model().objects.get(username="alice@acme.example")
        others = get_user_model().objects.filter(is_staff=True).exclude(pk=alice.pk)
        others.update(is_staff=False)
    response = admin.post(f"/users/{alice.pk}/role/", {"role": "member"}, follow=True)
    assert "last admin cannot become a member" in response.content.decode()
    response = admin.post(f"/users/{alice.pk}/remove/", follow=True)
    assert "last admin cannot be removed" in response.content.decode()
    with Tenant.objects.get(schema_name="acme"):
        assert get_user_model().objects.get(pk=alice.pk).is_staff


def test_submitting_bad_arguments_shows_the_message_next_to_the_field_and_writes_nothing():
    client = portal_client(ACME, "alice@acme.example")
    before = _count_jobs()
    response = client.post("/submit/demo.add/", {"x": "abc", "y": "2"})
    assert response.status_code == 400
    page = response.content.decode()
    assert re.search(r'id="arg-x-error">Enter a number\.', page)
    response = client.post("/submit/demo.add/", {"x": "1", "y": "1e16"})
    assert response.status_code == 400
    assert re.search(r'id="arg-y-error">[^<]*greater than the maximum', response.content.decode())
    response = client.post("/submit/demo.add/", {"x": "1"})
    assert re.search(r'id="arg-y-error">This field is required', response.content.decode())
    response = client.post("/submit/demo.add/", {"x": "1", "y": "2", "priority": "12"})
    assert response.status_code == 400
    assert 'id="id_priority_error"' in response.content.decode()
    assert _count_jobs() == before


def test_a_submission_from_the_form_goes_through_the_service_as_the_user():
    client = portal_client(ACME, "alice@acme.example")
    response = client.post("/submit/demo.add/", {"x": "2", "y": "3.5"})
    assert response.status_code == 302
    job_id = response["Location"].strip("/").split("/")[-1]
    job = _job(job_id)
    assert job.args == {"x": 2, "y": 3.5}
    assert job.status == JobStatus.QUEUED
    assert job.submitted_by.startswith("user:")


def _count_jobs() -> int:
    from tenants.models import Tenant

    with Tenant.objects.get(schema_name="acme"):
        return Job.objects.count()


def _job(job_id: str) -> Job:
    from tenants.models import Tenant

    with Tenant.objects.get(schema_name="acme"):
        return Job.objects.get(id=job_id)


def test_bad_list_filters_are_refused_next_to_the_field():
    client = portal_client(ACME, "alice@acme.example")
    response = client.get("/jobs/?status=exploded&schedule=-3")
    assert response.status_code == 400
    page = response.content.decode()
    assert 'id="id_status_error"' in page
    assert 'id="id_schedule_error"' in page
    assert client.get("/jobs/?id=not-a-uuid").status_code == 400
    assert client.get("/jobs/?cursor=garbage").status_code == 400


def test_the_list_filters_by_arguments_and_finds_a_job_by_id(actors):
    job = queued_job(actors.acme, "demo.add", {"x": 424242, "y": 1})
    client = portal_client(ACME, "alice@acme.example")
    page = client.get("/jobs/?q=424242").content.decode()
    assert str(job.id) in page
    assert client.get(f"/jobs/?id={job.id}")["Location"] == f"/jobs/{job.id}/"
    assert str(job.id) not in client.get("/jobs/?q=999999999").content.decode()


def test_globex_objects_are_404_on_acme_and_their_forms_change_nothing(actors):
    marker = uuid.uuid4().int % 10**12
    globex_job = queued_job(actors.globex, "demo.add", {"x": marker, "y": 2})
    globex_key = apikey_create(tenant=actors.globex, name="globex secret").api_key
    client = portal_client(ACME, "alice@acme.example")
    for path in [f"/jobs/{globex_job.id}/", f"/submit/demo.add/?from={globex_job.id}"]:
        assert client.get(path).status_code == 404, path
        # htmx's polling asks the same URLs for their live part: the same 404.
        assert client.get(path, headers={"HX-Request": "true"}).status_code == 404, path
    for path in [
        f"/jobs/{globex_job.id}/cancel/",
        f"/jobs/{globex_job.id}/retry/",
        f"/keys/{globex_key.pk}/revoke/",
    ]:
        assert client.post(path).status_code == 404, path
    with actors.globex:
        assert Job.objects.get(id=globex_job.id).status == JobStatus.QUEUED
    assert ApiKey.objects.get(pk=globex_key.pk).revoked_at is None
    # Nothing of globex's shows on acme's pages.
    for path in ["/jobs/", "/keys/", f"/jobs/?id={globex_job.id}"]:
        assert "globex" not in client.get(path).content.decode().lower(), path
    # A bulk cancel on acme's host matches acme's jobs only.
    client.post("/jobs/bulk/", {"action": "cancel", "q": str(marker)})
    with actors.globex:
        assert Job.objects.get(id=globex_job.id).status == JobStatus.QUEUED


def test_bulk_retry_retries_the_matching_failed_jobs_through_the_service(actors):
    marker = uuid.uuid4().hex
    failed = queued_job(actors.acme, "demo.fail", {"message": marker})
    other = queued_job(actors.acme, "demo.fail", {"message": "other"})
    with actors.acme:
        Job.objects.filter(id__in=[failed.id, other.id]).update(status=JobStatus.FAILED)
    client = portal_client(ACME, "alice@acme.example")
    response = client.post("/jobs/bulk/", {"action": "retry", "q": marker}, follow=True)
    assert "Retried 1 job." in response.content.decode()
    with actors.acme:
        assert Job.objects.get(id=failed.id).attempt_cause == "user_retry"
        assert Job.objects.get(id=other.id).status == JobStatus.FAILED
        Job.objects.filter(id=other.id).delete()
        assert not JobAttempt.objects.filter(job_id=failed.id).exists()


def test_api_keys_are_created_shown_once_and_revoked(actors):
    client = portal_client(ACME, "alice@acme.example")
    response = client.post("/keys/", {"name": "deploy", "scopes": ["jobs:read"]})
    assert response.status_code == 200
    assert "no-store" in response["Cache-Control"] or "max-age=0" in response["Cache-Control"]
    plaintext = re.search(r'value="(tjp_[^"]+)"', response.content.decode()).group(1)
    key = ApiKey.objects.get(tenant=actors.acme, name="deploy", revoked_at__isnull=True)
    assert plaintext not in client.get("/keys/").content.decode()
    assert key.scopes == ["jobs:read"]
    client.post(f"/keys/{key.pk}/revoke/")
    key.refresh_from_db()
    assert key.revoked_at is not None
    bad = client.post("/keys/", {"name": "", "scopes": ["root"]})
    assert bad.status_code == 400
    assert 'id="id_name_error"' in bad.content.decode()
    assert 'id="id_scopes_error"' in bad.content.decode()


@pytest.mark.parametrize(
    ("job_type", "args", "offered"),
    [
        ("demo.sleep", {"seconds": 60}, True),
        # A message half sent cannot be taken back: the service refuses its cancel, so the
        # page offers none.
        ("email.send", {"to": "a@example.com", "subject": "s", "body": "b"}, False),
    ],
)
def test_a_running_job_offers_cancel_only_if_its_type_can_be_stopped(
    actors, job_type, args, offered
):
    job = queued_job(actors.acme, job_type, args)
    client = portal_client(ACME, "alice@acme.example")
    cancel = f'action="/jobs/{job.id}/cancel/"'
    assert cancel in client.get(f"/jobs/{job.id}/").content.decode()  # queued: either type
    with actors.acme:
        Job.objects.filter(id=job.id).update(status=JobStatus.RUNNING)
    for headers in ({}, {"HX-Request": "true"}):  # the page and its live part
        page = client.get(f"/jobs/{job.id}/", headers=headers).content.decode()
        assert (cancel in page) is offered, headers
    with actors.acme:
        Job.objects.filter(id=job.id).delete()
