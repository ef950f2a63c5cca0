"""Ledger housekeeping: drop old storage events, old link attempts and long-expired unused uploads.

What goes (each limit in days, from settings):
- storage events last received more than EVENT_RETENTION_DAYS ago whose upload is terminal
  (linked, failed, expired, superseded, aborted) or that matched no upload at all;
- link attempts started more than LINK_ATTEMPT_RETENTION_DAYS ago, except the last attempt of
  each upload (the admin shows why an upload is where it is);
- uploads that never received a file (``expired`` or ``aborted``) issued more than
  EXPIRED_UPLOAD_RETENTION_DAYS ago, with their attempts.
Uploads that were linked, failed or superseded are never removed: they are the history of what
CKAN points at and what a steward may still replay.

Every kind is deleted in batches of ``batch_size`` primary keys, each batch its own short
statement, so a table of millions is pruned without one long lock; the same queries count the
rows for ``dry_run``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Exists, OuterRef, Q, QuerySet
from django.utils import timezone

from uploads.models import LinkAttempt, StorageEvent, Upload, UploadState

log = logging.getLogger(__name__)

BATCH_SIZE = 1000
TERMINAL_STATES = (
    UploadState.LINKED,
    UploadState.FAILED,
    UploadState.EXPIRED,
    UploadState.SUPERSEDED,
    UploadState.ABORTED,
)
UNUSED_STATES = (UploadState.EXPIRED, UploadState.ABORTED)


@dataclass(frozen=True)
class PruneReport:
    dry_run: bool
    events: int
    link_attempts: int
    uploads: int
    cutoffs: dict[str, datetime]

    def as_dict(self) -> dict[str, Any]:
        return {
            "dry_run": self.dry_run,
            "events": self.events,
            "link_attempts": self.link_attempts,
            "uploads": self.uploads,
            "cutoffs": {name: when.isoformat() for name, when in self.cutoffs.items()},
        }


def prunable_events(cutoff: datetime) -> QuerySet[StorageEvent]:
    """Events older than the cutoff whose upload can no longer change (or that have none)."""
    # first_received_at narrows through its index; last_received_at keeps a redelivered one.
    return StorageEvent.objects.filter(first_received_at__lt=cutoff, last_received_at__lt=cutoff).filter(
        Q(upload__isnull=True) | Q(upload__state__in=TERMINAL_STATES)
    )


def prunable_attempts(cutoff: datetime) -> QuerySet[LinkAttempt]:
    """Attempts older than the cutoff that are not their upload's last one."""
    later = LinkAttempt.objects.filter(upload_id=OuterRef("upload_id")).filter(
        Q(started_at__gt=OuterRef("started_at")) | Q(started_at=OuterRef("started_at"), pk__gt=OuterRef("pk"))
    )
    return LinkAttempt.objects.filter(started_at__lt=cutoff).filter(Exists(later))


def prunable_uploads(cutoff: datetime) -> QuerySet[Upload]:
    """Uploads that never received a file, issued before the cutoff."""
    return Upload.objects.filter(state__in=UNUSED_STATES, issued_at__lt=cutoff)


def cutoffs(now: datetime) -> dict[str, datetime]:
    return {
        "events": now - timedelta(days=settings.EVENT_RETENTION_DAYS),
        "link_attempts": now - timedelta(days=settings.LINK_ATTEMPT_RETENTION_DAYS),
        "uploads": now - timedelta(days=settings.EXPIRED_UPLOAD_RETENTION_DAYS),
    }


def _delete_in_batches(queryset: QuerySet[Any], *, batch_size: int) -> int:
    """Delete what the queryset matches, ``batch_size`` primary keys at a time; return how many went."""
    model = queryset.model
    total = 0
    while True:
        ids = list(queryset.values_list("pk", flat=True)[:batch_size])
        if not ids:
            return total
        with transaction.atomic():
            # Re-filtered by the same conditions: a row that changed since the SELECT stays.
            deleted = queryset.filter(pk__in=ids).delete()[1].get(model._meta.label, 0)
        total += deleted
        if deleted == 0:
            return total


def run_prune(*, now: datetime | None = None, dry_run: bool = False, batch_size: int = BATCH_SIZE) -> PruneReport:
    """Remove (or, with ``dry_run``, count) what the retention settings let go."""
    now = now or timezone.now()
    limits = cutoffs(now)
    querysets: dict[str, QuerySet[Any]] = {
        "events": prunable_events(limits["events"]),
        "link_attempts": prunable_attempts(limits["link_attempts"]),
        "uploads": prunable_uploads(limits["uploads"]),
    }
    counts: dict[str, int] = {}
    # Events first, then attempts, then uploads: removing an upload cascades its attempts,
    # which is counted under uploads, and leaves its events with no upload for the next run.
    for name, queryset in querysets.items():
        counts[name] = queryset.count() if dry_run else _delete_in_batches(queryset, batch_size=batch_size)
    report = PruneReport(dry_run=dry_run, cutoffs=limits, **counts)
    if not dry_run and any(counts.values()):
        log.info("prune removed %s", counts)
    return report
