"""The email.send job type: its argument schema, its outcomes, and a run on a real worker."""

from __future__ import annotations

import smtplib
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest
from django.core import mail
from django.core.mail.backends.base import BaseEmailBackend
from django.core.mail.message import EmailMessage
from django.test import override_settings

from jobs.catalogue import JobArgsError, JobContext, PermanentJobError, job_type_get
from tests.conftest import Actors
from tests.jobs_helpers import submit, wait_final
from tests.workers import WorkerProcess

JOB_TYPE = job_type_get("email.send")
CONTEXT = JobContext(job_id="test", attempt=1, schema_name="acme", report_progress=lambda p: None)
LOCMEM = "django.core.mail.backends.locmem.EmailBackend"


def run(**args: Any) -> Any:
    return JOB_TYPE.run(CONTEXT, JOB_TYPE.validate_args(args))


class ScriptedBackend(BaseEmailBackend):
    """Fails as `failures` says: on "open", or on the n-th message sent (1-based)."""

    failures: ClassVar[dict[str | int, BaseException]] = {}
    delivered: ClassVar[list[str]] = []

    def open(self) -> bool:
        if "open" in self.failures:
            raise self.failures["open"]
        return True

    def send_messages(self, email_messages: Any) -> int:
        for message in email_messages:
            failure = self.failures.get(len(self.delivered) + 1)
            if failure is not None:
                raise failure
            self.delivered.extend(message.to)
        return len(email_messages)


@pytest.fixture
def scripted() -> Iterator[type[ScriptedBackend]]:
    ScriptedBackend.failures = {}
    ScriptedBackend.delivered = []
    with override_settings(EMAIL_BACKEND=f"{__name__}.ScriptedBackend"):
        yield ScriptedBackend


@pytest.fixture
def outbox() -> Iterator[list[EmailMessage]]:
    with override_settings(EMAIL_BACKEND=LOCMEM, DEFAULT_FROM_EMAIL="jobs@platform.test"):
        mail.outbox = []
        yield mail.outbox


# --- Arguments -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "to",
    ["dave@example.com", ["dave@example.com"], [f"user{n}@example.com" for n in range(50)],
     "first.last+tag@sub.example.co.uk", "o'brien@example.org"],
)  # fmt: skip
def test_it_accepts_an_address_or_up_to_50(to: Any) -> None:
    JOB_TYPE.validate_args({"to": to, "subject": "Hi", "body": "Hello"})


@pytest.mark.parametrize(
    "args",
    [
        {"to": "dave@example.com", "subject": "Hi"},
        {"subject": "Hi", "body": "Hello"},
        {"to": "dave@example.com", "subject": "Hi", "body": "Hello", "cc": "x@example.com"},
        {"to": "not-an-email", "subject": "Hi", "body": "Hello"},
        {"to": "dave@localhost", "subject": "Hi", "body": "Hello"},
        {"to": "Dave <dave@example.com>", "subject": "Hi", "body": "Hello"},
        {"to": "dave@example.com\nBcc: x@example.com", "subject": "Hi", "body": "Hello"},
        {"to": [], "subject": "Hi", "body": "Hello"},
        {"to": [f"u{n}@example.com" for n in range(51)], "subject": "Hi", "body": "Hello"},
        {"to": ["a@example.com", "a@example.com"], "subject": "Hi", "body": "Hello"},
        {"to": ["a@example.com", 7], "subject": "Hi", "body": "Hello"},
        {"to": "dave@example.com", "subject": "Hi\r\nBcc: x@example.com", "body": "Hello"},
        {"to": "dave@example.com", "subject": "s" * 999, "body": "Hello"},
        {"to": "dave@example.com", "subject": "Hi", "body": "b" * 100_001},
        {"to": "dave@example.com", "subject": "Hi", "body": None},
    ],
)
def test_it_refuses_invalid_args(args: dict[str, Any]) -> None:
    with pytest.raises(JobArgsError):
        JOB_TYPE.validate_args(args)


# --- Outcomes ------------------------------------------------------------------------------------


def test_it_sends_one_message_from_the_platform_sender(outbox: list[EmailMessage]) -> None:
    assert run(to="dave@example.com", subject="Report ready", body="See attached.") == {"sent": 1}
    [message] = outbox
    assert (message.from_email, message.to) == ("jobs@platform.test", ["dave@example.com"])
    assert (message.subject, message.body) == ("Report ready", "See attached.")


def test_each_recipient_gets_a_message_of_their_own(outbox: list[EmailMessage]) -> None:
    to = ["dave@example.com", "erin@example.com", "frank@example.com"]
    assert run(to=to, subject="Hi", body="Hello") == {"sent": 3}
    assert [message.to for message in outbox] == [[address] for address in to]
    assert all(not message.cc and not message.bcc for message in outbox)


def test_a_connection_failure_before_sending_is_retried(scripted: type[ScriptedBackend]) -> None:
    scripted.failures = {"open": ConnectionRefusedError("no SMTP server")}
    with pytest.raises(ConnectionRefusedError) as caught:
        run(to="dave@example.com", subject="Hi", body="Hello")
    assert not isinstance(caught.value, PermanentJobError)


def test_a_temporary_refusal_is_retried(scripted: type[ScriptedBackend]) -> None:
    scripted.failures = {1: smtplib.SMTPSenderRefused(451, b"try later", "jobs@platform.test")}
    with pytest.raises(smtplib.SMTPSenderRefused):
        run(to="dave@example.com", subject="Hi", body="Hello")


def test_a_permanent_refusal_fails_at_once(scripted: type[ScriptedBackend]) -> None:
    scripted.failures = {1: smtplib.SMTPRecipientsRefused({"dave@example.com": (550, b"no user")})}
    with pytest.raises(PermanentJobError, match="refused"):
        run(to="dave@example.com", subject="Hi", body="Hello")


def test_a_failure_after_some_were_sent_fails_without_sending_twice(
    scripted: type[ScriptedBackend],
) -> None:
    scripted.failures = {2: smtplib.SMTPServerDisconnected("gone")}
    to = ["dave@example.com", "erin@example.com", "frank@example.com"]
    with pytest.raises(PermanentJobError, match=r"sent to 1 of 3 recipients \(dave@example.com\)"):
        run(to=to, subject="Hi", body="Hello")
    assert scripted.delivered == ["dave@example.com"]


# --- On a real worker ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mail_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("mail")


@pytest.fixture(scope="module")
def file_mail_worker(
    actors: Actors, django_db_blocker: Any, mail_folder: Path
) -> Iterator[WorkerProcess]:
    """A worker whose email backend writes files into `mail_folder`."""
    with pytest.MonkeyPatch.context() as env:
        env.setenv("EMAIL_BACKEND", "django.core.mail.backends.filebased.EmailBackend")
        env.setenv("EMAIL_FILE_PATH", str(mail_folder))
        env.setenv("DEFAULT_FROM_EMAIL", "jobs@platform.test")
        with WorkerProcess(pool="prefork", concurrency=2) as worker:
            yield worker


@pytest.mark.worker
@pytest.mark.slow
def test_a_worker_sends_the_email(
    tenant_db: Actors, file_mail_worker: WorkerProcess, mail_folder: Path
) -> None:
    to = ["dave@example.com", "erin@example.com"]
    job = submit(tenant_db.acme, "email.send", {"to": to, "subject": "Weekly", "body": "All good."})
    [done] = wait_final(tenant_db.acme, [job.id])
    assert done.status == "succeeded", (done.error, file_mail_worker.output())
    assert done.result == {"sent": 2}
    written = "".join(path.read_text() for path in sorted(mail_folder.iterdir()))
    assert written.count("Subject: Weekly") == 2
    assert "To: dave@example.com" in written
    assert "To: erin@example.com" in written
    assert "From: jobs@platform.test" in written
    assert "All good." in written
