"""The safety net run every minute: due retries, stuck claims, lost events, stale URLs.

The ledger is the truth about pending work and tasks are only triggers, so this is what turns
a lost task, a killed worker or a restarted broker into a delay instead of a loss.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from uuid import UUID

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from uploads import storage
from uploads.models import LinkTrigger, Upload, UploadState
from uploads.services import ingest
from uploads.services.dispatch import enqueue_link

log = logging.getLogger(__name__)

BATCH_SIZE = 500
# An upload that has just become `uploaded` has its own task on the way: leave it that long
# before treating a missing next_attempt_at as a lost task.
FRESH_UPLOAD_SECONDS = 60
# A retry the sweep enqueued is sent again after this long if its task was lost (or is still
# queued behind a backlog): long enough not to pile up duplicates, short enough to heal.
LOST_TASK_SECONDS = 300


def run_sweep(*, now: datetime | None = None, batch_size: int = BATCH_SIZE) -> dict[str, int]:
    """Release stuck claims, enqueue due retries, find objects whose event was lost, expire stale URLs."""
    now = now or timezone.now()
    released = release_stale_claims(now=now, batch_size=batch_size)
    enqueued = enqueue_due_links(now=now, batch_size=batch_size)
    seen = link_issued_objects(now=now)
    expired = expire_stale_uploads(now=now, batch_size=batch_size)
    counts = {"released": released, "enqueued": enqueued, "seen": seen, "expired": expired}
    if any(counts.values()):
        log.info("sweep: %s", counts)
    return counts


def release_stale_claims(*, now: datetime, batch_size: int = BATCH_SIZE) -> int:
    """Free claims held longer than LINK_CLAIM_TIMEOUT_SECONDS: their worker died or hung."""
    cutoff = now - timedelta(seconds=settings.LINK_CLAIM_TIMEOUT_SECONDS)
    ids = list(
        Upload.objects.filter(claim_token__isnull=False, claimed_at__lt=cutoff).values_list("pk", flat=True)[
            :batch_size
        ]
    )
    if not ids:
        return 0
    # Conditional again: a worker that finishes in between clears its own claim first.
    released = Upload.objects.filter(pk__in=ids, claim_token__isnull=False, claimed_at__lt=cutoff).update(
        claim_token=None, claimed_at=None, next_attempt_at=now
    )
    if released:
        log.warning(
            "sweep released %d link claim(s) held for more than %d s", released, settings.LINK_CLAIM_TIMEOUT_SECONDS
        )
    return released


def enqueue_due_links(*, now: datetime, batch_size: int = BATCH_SIZE) -> int:
    """Send a link task for every uploaded, unclaimed upload whose retry is due."""
    fresh = now - timedelta(seconds=FRESH_UPLOAD_SECONDS)
    due = (
        Upload.objects.filter(state=UploadState.UPLOADED, claim_token__isnull=True)
        .filter(Q(next_attempt_at__lte=now) | Q(next_attempt_at__isnull=True, updated_at__lt=fresh))
        .order_by("next_attempt_at")
        .values_list("pk", flat=True)[:batch_size]
    )
    ids = list(due)
    if not ids:
        return 0
    # Pushed back by LOST_TASK_SECONDS: if this task is lost too, the next sweep after that
    # sends another; if it runs, the link service sets next_attempt_at itself.
    later = now + timedelta(seconds=LOST_TASK_SECONDS)
    with transaction.atomic():
        Upload.objects.filter(pk__in=ids, claim_token__isnull=True).update(next_attempt_at=later)
        for upload_id in ids:
            enqueue_link(upload_id, trigger=LinkTrigger.RETRY)
    return len(ids)


def link_issued_objects(*, now: datetime, limit: int | None = None) -> int:
    """HEAD uploads still ``issued`` past SWEEP_HEAD_ISSUED_AFTER_SECONDS; link those whose object is there.

    The event of such an object was lost (or is late) and its client never called ``complete``.
    At most SWEEP_HEAD_ISSUED_LIMIT per run, the least recently looked at first (a HEAD that
    finds nothing touches ``updated_at``, so the next run looks at others). No transaction is
    open during the HEADs; the found ones move issued → uploaded by ``ingest.mark_objects_seen``
    (an event's rules, in one UPDATE) and get a link task each. Returns how many moved.
    """
    limit = settings.SWEEP_HEAD_ISSUED_LIMIT if limit is None else limit
    if limit <= 0:
        return 0
    cutoff = now - timedelta(seconds=settings.SWEEP_HEAD_ISSUED_AFTER_SECONDS)
    rows = list(
        Upload.objects.filter(state=UploadState.ISSUED, issued_at__lt=cutoff)
        .order_by("updated_at", "pk")
        .values_list("pk", "key")[:limit]
    )
    found: dict[UUID, storage.ObjectInfo] = {}
    absent: list[UUID] = []
    for pk, key in rows:
        try:
            info = storage.head_object(key)
        except storage.StorageError as exc:
            log.warning("sweep stopped looking for unevented objects: %s", exc)  # the next run tries again
            break
        if info is None:
            absent.append(pk)
        else:
            found[pk] = info
    if absent:
        Upload.objects.filter(pk__in=absent, state=UploadState.ISSUED).update(updated_at=now)
    if not found:
        return 0
    # The rules of an event's "object seen" (ingest), set-based: one UPDATE, one push of link tasks.
    moved = ingest.mark_objects_seen(found, trigger=LinkTrigger.SWEEP, now=now)
    if moved:
        log.warning("sweep found %d object(s) whose event never came; linking them", len(moved))
    return len(moved)


def expire_stale_uploads(*, now: datetime, batch_size: int = BATCH_SIZE) -> int:
    """Mark issued URLs that saw no object by expires_at + grace as expired.

    A multipart upload abandoned that long (MULTIPART_MAX_AGE) is aborted in the store first, so
    its parts stop costing money; one the store cannot abort now stays issued for the next sweep.
    """
    cutoff = now - timedelta(seconds=settings.UPLOAD_EXPIRY_GRACE_SECONDS)
    rows = list(
        Upload.objects.filter(state=UploadState.ISSUED, expires_at__lt=cutoff).values_list(
            "pk", "key", "multipart_upload_id"
        )[:batch_size]
    )
    if not rows:
        return 0
    ids = [pk for pk, _, multipart_id in rows if not multipart_id]
    ids += abort_abandoned_multipart([(pk, key, multipart_id) for pk, key, multipart_id in rows if multipart_id])
    return expire_uploads(ids, now=now) if ids else 0


def abort_abandoned_multipart(rows: list[tuple[UUID, str, str]]) -> list[UUID]:
    """Abort abandoned multipart uploads in the store (no transaction open); return those now gone."""
    gone: list[UUID] = []
    for pk, key, multipart_id in rows:
        try:
            storage.abort_multipart_upload(key, upload_id=multipart_id)
        except storage.StorageError as exc:
            log.warning("sweep could not abort the abandoned multipart upload of %s: %s", pk, exc)
            continue
        gone.append(pk)
    if gone:
        log.info("sweep aborted %d abandoned multipart upload(s)", len(gone))
    return gone


def expire_uploads(ids: list[UUID], *, now: datetime) -> int:
    """issued → expired for these uploads; returns how many moved."""
    # Conditional on the state: an object seen in between moves the row to uploaded first.
    return Upload.objects.filter(pk__in=ids, state=UploadState.ISSUED).update(state=UploadState.EXPIRED, updated_at=now)
