"""``manage.py prune [--dry-run] [--batch-size N]``: ledger housekeeping (uploads/services/prune.py)."""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from uploads.services.prune import BATCH_SIZE, run_prune


class Command(BaseCommand):
    help = (
        "Remove storage events older than EVENT_RETENTION_DAYS whose upload is terminal, link attempts older "
        "than LINK_ATTEMPT_RETENTION_DAYS (each upload keeps its last one) and unused (expired or aborted) "
        "uploads older than EXPIRED_UPLOAD_RETENTION_DAYS. Linked uploads are kept."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--dry-run", action="store_true", help="count what would be removed, remove nothing")
        parser.add_argument(
            "--batch-size", type=int, default=BATCH_SIZE, help=f"rows per delete (default {BATCH_SIZE})"
        )
        parser.add_argument("--json", action="store_true", help="print the report as one JSON object")

    def handle(self, *args: Any, **options: Any) -> None:
        if options["batch_size"] < 1:
            self.stderr.write("--batch-size must be at least 1")
            raise SystemExit(2)
        report = run_prune(dry_run=options["dry_run"], batch_size=options["batch_size"])
        if options["json"]:
            self.stdout.write(json.dumps(report.as_dict()))
            return
        verb = "would remove" if report.dry_run else "removed"
        self.stdout.write(f"prune {verb}:")
        for name, label, cutoff in (
            ("events", "storage events", report.cutoffs["events"]),
            ("link_attempts", "link attempts", report.cutoffs["link_attempts"]),
            ("uploads", "unused uploads", report.cutoffs["uploads"]),
        ):
            self.stdout.write(f"  {getattr(report, name):>10}  {label} (before {cutoff:%Y-%m-%d %H:%M} UTC)")
