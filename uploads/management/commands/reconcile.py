"""`manage.py reconcile`: scan bucket vs ledger vs CKAN, with a progress bar and a summary table."""

from __future__ import annotations

from typing import IO, Any, cast

from django.core.management.base import BaseCommand, CommandError, CommandParser
from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from uploads.models import DiscrepancyKind
from uploads.services import reconcile

_PHASES = {"listing": "objects listed", "ledger": "ledger rows checked", "ckan": "resources compared in CKAN"}


class Command(BaseCommand):
    help = "Compare the bucket, the ledger and CKAN; record what differs; heal it with --fix."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--fix", action="store_true", help="apply the safe heals (link, expire, re-patch)")
        parser.add_argument("--dry-run", action="store_true", help="change nothing; report what would be done")
        parser.add_argument("--delete-orphans", action="store_true", help="delete orphan objects (needs --older-than)")
        parser.add_argument(
            "--older-than", type=int, metavar="DAYS", help="only orphans last modified DAYS ago or more"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        older_than = options["older_than"]
        if options["delete_orphans"] and older_than is None:
            raise CommandError("--delete-orphans needs --older-than DAYS")
        if older_than is not None and not options["delete_orphans"]:
            raise CommandError("--older-than only applies with --delete-orphans")
        if older_than is not None and older_than < 0:
            raise CommandError("--older-than must be 0 or more")
        # Rich writes partial lines; Django's OutputWrapper would end each with a newline.
        console = Console(file=cast(IO[str], self.stdout._out))
        columns = (SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed:,}"))
        with Progress(*columns, TimeElapsedColumn(), console=console, transient=False) as bar:
            tasks: dict[str, Any] = {}

            def progress(phase: str, done: int) -> None:
                if phase not in tasks:
                    tasks[phase] = bar.add_task(_PHASES.get(phase, phase), total=None)
                bar.update(tasks[phase], completed=done)

            try:
                run = reconcile.run_reconcile(
                    fix=options["fix"],
                    dry_run=options["dry_run"],
                    delete_orphans_older_than_days=older_than if options["delete_orphans"] else None,
                    triggered_by="command",
                    progress=progress,
                )
            except Exception as exc:
                raise CommandError(f"reconcile failed: {exc}") from exc
        console.print(summary_table(run.counts, dry_run=run.dry_run))
        console.print(
            f"Run {run.pk}: {run.objects_scanned:,} objects, {run.uploads_checked:,} ledger rows, "
            f"{run.resources_checked:,} resources checked" + (" (dry run: nothing changed)" if run.dry_run else "")
        )


def summary_table(counts: dict[str, Any], *, dry_run: bool) -> Table:
    """One row per kind: found, new, healed (or would heal in a dry run)."""
    table = Table(title="Reconciliation")
    healed = "would_heal" if dry_run else "healed"
    for column in ("kind", "found", "new", healed.replace("_", " ")):
        table.add_column(column, justify="left" if column == "kind" else "right")
    for kind in DiscrepancyKind:
        table.add_row(
            str(kind.label),
            str(counts["found"][kind.value]),
            str(counts["new"][kind.value]),
            str(counts[healed][kind.value]),
        )
    extra = [
        (
            "orphans deleted" if not dry_run else "orphans that would be deleted",
            counts["would_delete" if dry_run else "deleted"],
        ),
        ("ignored (seen again)", counts["ignored"]),
        ("resolved by themselves", counts["resolved"]),
        ("heals that failed", counts["heal_failed"]),
        ("CKAN errors", counts["ckan_errors"]),
        ("storage errors", counts["storage_errors"]),
    ]
    for label, value in extra:
        table.add_row(label, str(value), "", "")
    return table
