from __future__ import annotations

from datetime import datetime
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from billing.invoices import invoices_close
from billing.rollup import usage_rollup
from tenants.audit import audit_command


class Command(BaseCommand):
    help = (
        "Roll usage up, refresh this month's drafts and make final every invoice whose month "
        "ended more than BILLING_INVOICE_GRACE_DAYS ago. Safe to run again."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--at", help="Close as of this ISO 8601 time (with offset) instead of now."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        now = timezone.now()
        if options["at"]:
            try:
                now = datetime.fromisoformat(options["at"])
            except ValueError:
                raise CommandError(f"--at {options['at']!r} is not an ISO 8601 time.") from None
            if now.tzinfo is None:
                raise CommandError("--at needs an offset, such as 2026-01-04T00:00:00+00:00.")
        usage_rollup()
        result = invoices_close(now=now)
        audit_command(
            command="invoice_close",
            action="invoices closed",
            after={"at": now.isoformat(), "drafted": result.drafted, "final": result.finalized},
        )
        self.stdout.write(
            f"{result.drafted} drafts written, {result.finalized} invoices made final"
        )
