"""email.send: a plain-text email through Django's email backend, from DEFAULT_FROM_EMAIL.

Each recipient gets a message of their own, so recipients never see each other's addresses. The
messages share one backend connection. Retrying is only safe while nothing has gone out: a failure
before the first message is retried (unless the server refused for good, a 5xx), a failure after
it fails the job, naming who was reached, rather than mailing those recipients twice.
"""

from __future__ import annotations

import contextlib
import smtplib
from typing import Any, Final

from django.conf import settings
from django.core import mail
from django.core.exceptions import ValidationError
from django.core.validators import validate_email

from jobs.catalogue import JobContext, JobType, PermanentJobError

MAX_RECIPIENTS: Final = 50
MAX_SUBJECT_LENGTH: Final = 998  # RFC 5322's line limit
MAX_BODY_LENGTH: Final = 100_000
# Used when settings.EMAIL_TIMEOUT is unset, so a silent SMTP server cannot hold the worker.
DEFAULT_SMTP_TIMEOUT_SECONDS: Final = 30

# A plain address (no display name): dot-atom local part, a domain with at least one dot.
EMAIL_PATTERN: Final = (
    "^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]{1,64}"
    "@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\\.)+[A-Za-z]{2,63}$"
)
_EMAIL_SCHEMA: Final = {"type": "string", "maxLength": 254, "pattern": EMAIL_PATTERN}


class EmailNotSent(Exception):
    """The backend reported fewer messages sent than were given to it."""


def _recipients(to: str | list[str]) -> list[str]:
    addresses = [to] if isinstance(to, str) else list(to)
    for address in addresses:
        try:
            validate_email(address)
        except ValidationError:
            raise PermanentJobError(f"{address!r} is not an email address") from None
    return addresses


def _is_permanent(exc: BaseException) -> bool:
    """Would sending again get the same refusal? (5xx answers, invalid messages.)"""
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        return all(code >= 500 for code, _message in exc.recipients.values())
    if isinstance(exc, smtplib.SMTPResponseException):
        return exc.smtp_code >= 500
    # BadHeaderError and address errors are ValueErrors: the message itself is wrong.
    return isinstance(exc, ValueError)


def run(context: JobContext, args: dict[str, Any]) -> dict[str, int]:
    recipients = _recipients(args["to"])
    timeout = getattr(settings, "EMAIL_TIMEOUT", None) or DEFAULT_SMTP_TIMEOUT_SECONDS
    connection = mail.get_connection(fail_silently=False, timeout=timeout)
    sent: list[str] = []
    try:
        connection.open()
        for address in recipients:
            message = mail.EmailMessage(
                subject=args["subject"],
                body=args["body"],
                from_email=settings.DEFAULT_FROM_EMAIL,
                to=[address],
                connection=connection,
            )
            if connection.send_messages([message]) != 1:
                raise EmailNotSent(f"the email backend did not send the message to {address}")
            sent.append(address)
    except Exception as exc:
        if sent:
            raise PermanentJobError(
                f"sent to {len(sent)} of {len(recipients)} recipients ({', '.join(sent)}), "
                f"then failed: {exc!r}; not retried, so nobody gets the message twice"
            ) from exc
        if _is_permanent(exc):
            raise PermanentJobError(f"the mail server refused the message: {exc!r}") from exc
        raise
    finally:
        # By now the outcome is decided; a failed goodbye to the server changes nothing.
        with contextlib.suppress(smtplib.SMTPException, OSError):
            connection.close()
    return {"sent": len(sent)}


JOB_TYPE = JobType(
    name="email.send",
    description=(
        "Sends a plain-text email to one address or up to 50 (one message per recipient, so "
        "they do not see each other), from the platform's sender address."
    ),
    args_schema={
        "type": "object",
        "properties": {
            "to": {
                "oneOf": [
                    _EMAIL_SCHEMA,
                    {
                        "type": "array",
                        "items": _EMAIL_SCHEMA,
                        "minItems": 1,
                        "maxItems": MAX_RECIPIENTS,
                        "uniqueItems": True,
                    },
                ]
            },
            "subject": {
                "type": "string",
                "maxLength": MAX_SUBJECT_LENGTH,
                "pattern": "^[^\\r\\n]*$",
            },
            "body": {"type": "string", "maxLength": MAX_BODY_LENGTH},
        },
        "required": ["to", "subject", "body"],
        "additionalProperties": False,
    },
    run=run,
    time_limit_seconds=300,
    # The seed's advice for tasks whose return value nobody reads: no result row. The Job row
    # still records the outcome and the count of messages sent.
    ignore_result=True,
    # Stopped halfway, some recipients would have their mail and the job could not say which
    # (its retry rule above exists to never mail anyone twice): a running email.send finishes.
    cancellable=False,
    result_schema={"type": "object", "properties": {"sent": {"type": "integer"}}},
    max_attempts=5,
    retry_backoff_seconds=10.0,
    # Fifty recipients a job: a lower default than the catalogue's 10/s.
    examples=(
        {"to": "carol@globex.example", "subject": "Hello", "body": ""},
        {"to": ["a@b.example", "c@d.example"], "subject": "", "body": "x" * 100},
    ),
)
