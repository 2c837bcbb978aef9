"""An email backend for worker processes in tests: Django's locmem backend, slowly.

Each message takes SLOW_EMAIL_SECONDS (default 3) to send, so a test can act while an
`email.send` job runs; a subject starting "fail" fails after that wait, before anything is sent
(a dropped connection: email.send retries it). Workers load it by dotted path (EMAIL_BACKEND),
with the repository on PYTHONPATH.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence

from django.core.mail import EmailMessage
from django.core.mail.backends.locmem import EmailBackend


class SlowEmailBackend(EmailBackend):
    def send_messages(self, messages: Sequence[EmailMessage]) -> int:
        time.sleep(float(os.environ.get("SLOW_EMAIL_SECONDS", "3")))
        if any(message.subject.startswith("fail") for message in messages):
            raise ConnectionResetError("the test's mail server dropped the connection")
        sent: int = super().send_messages(messages)
        return sent
