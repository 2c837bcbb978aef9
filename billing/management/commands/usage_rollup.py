from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from billing.rollup import BATCH_SIZE, usage_rollup
from tenants.audit import audit_command


class Command(BaseCommand):
    help = (
        "Roll the Redis usage counters up into billing's tables. Safe to run at any time and "
        "again after an interruption: nothing is lost or counted twice."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--batch-size", type=int, default=BATCH_SIZE)

    def handle(self, *args: Any, **options: Any) -> None:
        def progress(number: int) -> None:
            if options["verbosity"] > 1:
                self.stdout.write(f"batch {number} committed")

        result = usage_rollup(batch_size=options["batch_size"], after_batch=progress)
        audit_command(
            command="usage_rollup",
            action="usage rolled up",
            after={"visited": result.visited, "written": result.written},
        )
        self.stdout.write(
            f"{result.visited} tenant-days read, {result.written} rows written, "
            f"{result.cleaned} cleaned, {result.dropped} dropped"
        )
