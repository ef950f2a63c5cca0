from __future__ import annotations

import getpass
from datetime import UTC, datetime
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone
from django.utils.dateparse import parse_date, parse_datetime

from uploads.models import TargetKind, Upload, UploadState
from uploads.services.replay import plan_replay, replay_uploads, select_uploads_for_replay


def _moment(value: str) -> datetime:
    """An ISO date or date-time; naive values are taken as UTC."""
    parsed = parse_datetime(value)
    if parsed is None:
        day = parse_date(value)
        if day is None:
            raise CommandError(f"not an ISO date or date-time: {value!r}")
        parsed = datetime(day.year, day.month, day.day)
    if timezone.is_naive(parsed):
        parsed = timezone.make_aware(parsed, UTC)
    return parsed


def _target(upload: Upload) -> str:
    if upload.target_kind == TargetKind.RESOURCE:
        return upload.resource_id
    return f"{upload.target_kind} {upload.target_name or upload.target_id}"


class Command(BaseCommand):
    help = "Hand failed uploads back to the link service (each recorded as a replay attempt by you)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--state", default=UploadState.FAILED, choices=[s.value for s in UploadState])
        parser.add_argument("--requester", help="CKAN user name who asked for the upload URL")
        parser.add_argument("--resource", help="CKAN resource id")
        parser.add_argument("--dataset", help="CKAN dataset (package) id")
        parser.add_argument("--kind", choices=[k.value for k in TargetKind], help="resource files or images only")
        parser.add_argument("--target", help="the resource, organization or group id the file is for")
        parser.add_argument("--organization", help="CKAN organization name (its datasets' files and its image)")
        parser.add_argument("--since", help="issued at or after (ISO date or date-time, UTC if naive)")
        parser.add_argument("--until", help="issued before (ISO date or date-time, UTC if naive)")
        parser.add_argument("--limit", type=int, help="replay at most this many (oldest first)")
        parser.add_argument("--dry-run", action="store_true", help="say what would be replayed, change nothing")
        parser.add_argument("--by", help="who to record as the replayer (default: the OS user)")

    def handle(self, *args: Any, **options: Any) -> None:
        if options["limit"] is not None and options["limit"] < 1:
            raise CommandError("--limit must be at least 1")
        uploads = select_uploads_for_replay(
            state=options["state"],
            requester=options["requester"],
            resource_id=options["resource"],
            package_id=options["dataset"],
            target_kind=options["kind"],
            target_id=options["target"],
            organization=options["organization"],
            since=_moment(options["since"]) if options["since"] else None,
            until=_moment(options["until"]) if options["until"] else None,
        )
        if options["limit"]:
            uploads = uploads[: options["limit"]]
        plan = plan_replay(uploads)
        for item in plan:
            verb = "replay" if item.replay else "skip  "
            self.stdout.write(f"{verb} {item.upload.id} {item.upload.filename} → {_target(item.upload)}: {item.reason}")
        to_replay = [item.upload.id for item in plan if item.replay]
        if options["dry_run"]:
            self.stdout.write(f"dry run: would replay {len(to_replay)}, skip {len(plan) - len(to_replay)}")
            return
        by = options["by"] or f"cli:{getpass.getuser()}"
        result = replay_uploads(upload_ids=to_replay, by=by)
        for upload_id, reason in result.skipped.items():
            self.stdout.write(f"skipped {upload_id}: {reason}")
        self.stdout.write(
            f"replayed {len(result.replayed)}, skipped {len(result.skipped) + len(plan) - len(to_replay)} (by {by})"
        )
