"""Record storage events (and the client's ``complete`` hint) in the ledger, once each.

Every path that says "an object was seen" ends here: events are deduplicated by their content,
a duplicate only counts a delivery, and a new event moves its Upload and enqueues the link
after commit.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone

from uploads import storage
from uploads.events import ObjectEvent
from uploads.models import (
    EventAction,
    EventSource,
    EventStatus,
    LinkTrigger,
    StorageEvent,
    Upload,
    UploadState,
)
from uploads.services.dispatch import enqueue_link
from uploads.services.link import OBJECT_NOT_FOUND
from uploads.storage import ObjectInfo

log = logging.getLogger(__name__)

MAX_RAW_BODY_CHARS = 64 * 1024
MAX_PARSE_ERROR_CHARS = 2000
CLIENT_COMPLETE_EVENT = "client:complete"


@dataclass(frozen=True)
class RecordResult:
    """What recording one event did."""

    event: StorageEvent
    duplicate: bool

    @property
    def unmatched(self) -> bool:
        return self.event.status == EventStatus.UNMATCHED

    @property
    def unparseable(self) -> bool:
        return self.event.status == EventStatus.UNPARSEABLE


def _count_delivery(dedupe_key: str, now: datetime) -> StorageEvent:
    """A repeated delivery: count it, change nothing else."""
    StorageEvent.objects.filter(dedupe_key=dedupe_key).update(deliveries=F("deliveries") + 1, last_received_at=now)
    return StorageEvent.objects.get(dedupe_key=dedupe_key)


def _create_once(fields: dict[str, object], dedupe_key: str, now: datetime) -> tuple[StorageEvent, bool]:
    """Insert the event, or count a delivery when it exists (also when a concurrent insert won)."""
    if StorageEvent.objects.filter(dedupe_key=dedupe_key).exists():
        return _count_delivery(dedupe_key, now), False
    try:
        # A savepoint, so losing the race to a concurrent duplicate leaves the transaction usable.
        with transaction.atomic():
            event = StorageEvent.objects.create(
                dedupe_key=dedupe_key, first_received_at=now, last_received_at=now, **fields
            )
    except IntegrityError:
        return _count_delivery(dedupe_key, now), False
    return event, True


def _match(event: ObjectEvent) -> Upload | None:
    return Upload.objects.filter(key=event.key, bucket=event.bucket).first()


@transaction.atomic
def record_event(*, source: str, event: ObjectEvent) -> RecordResult:
    """Record one storage event (deduplicated); a new, matched event moves its Upload."""
    now = timezone.now()
    upload = _match(event)
    stored, created = _create_once(
        {
            "source": source,
            "status": EventStatus.MATCHED if upload else EventStatus.UNMATCHED,
            "action": event.action,
            "event_name": event.event_name,
            "bucket": event.bucket,
            "key": event.key,
            "size": event.size,
            "etag": event.etag,
            "event_time": event.event_time,
            "sequencer": event.sequencer,
            "payload": event.payload,
            "upload": upload,
        },
        event.dedupe_key,
        now,
    )
    if not created:
        return RecordResult(event=stored, duplicate=True)
    if upload is None:
        log.info("unmatched %s event for %s/%s", event.action, event.bucket, event.key)
    elif event.action == EventAction.CREATED:
        mark_object_seen(
            upload, size=event.size, etag=event.etag, seen_at=event.event_time or now, trigger=LinkTrigger.EVENT
        )
    else:
        _mark_object_deleted(upload, deleted_at=event.event_time or now)
    return RecordResult(event=stored, duplicate=False)


def _mark_object_deleted(upload: Upload, *, deleted_at: datetime) -> None:
    """Flag the upload for the dashboard: its object was deleted from the bucket."""
    locked = Upload.objects.select_for_update().get(pk=upload.pk)
    if locked.object_deleted_at and locked.object_deleted_at >= deleted_at:
        return
    locked.object_deleted_at = deleted_at
    locked.save(update_fields=["object_deleted_at", "updated_at"])
    upload.object_deleted_at = deleted_at
    log.warning("the object of upload %s (%s) was deleted", upload.pk, upload.state)


@transaction.atomic
def mark_object_seen(upload: Upload, *, size: int | None, etag: str, seen_at: datetime, trigger: str) -> bool:
    """Note that the upload's object exists; move the Upload to ``uploaded`` and enqueue its link.

    issued/expired → uploaded; failed/linked → uploaded only for a different object (a re-PUT
    through the same URL, told apart by its ETag); uploaded stays uploaded (a link is re-enqueued
    when the object is new to the ledger); superseded and aborted are left alone. A link that
    looked and found no object is news either way: its upload is linked now, not at its backoff
    (also when every attempt ran before the PUT landed and it ended failed). Returns True when a
    link was enqueued.
    """
    locked = Upload.objects.select_for_update().get(pk=upload.pk)
    state = locked.state
    new_object = bool(etag) and storage.normal_etag(etag) != storage.normal_etag(locked.object_etag)
    # The last link HEADed and found nothing: this hint says otherwise.
    missed = locked.last_error.startswith(OBJECT_NOT_FOUND)
    if state in (UploadState.SUPERSEDED, UploadState.ABORTED):
        return False
    if state == UploadState.LINKED and not new_object:
        return False
    if state == UploadState.FAILED and not (new_object or missed):
        return False
    if state == UploadState.UPLOADED and not (new_object or missed) and locked.object_seen_at is not None:
        return False

    now = timezone.now()
    fields = ["state", "object_seen_at", "next_attempt_at", "updated_at"]
    locked.state = UploadState.UPLOADED
    locked.object_seen_at = seen_at
    locked.next_attempt_at = now
    if size is not None:
        locked.object_size = size
        fields.append("object_size")
    if etag:
        locked.object_etag = etag.strip().strip('"')
        fields.append("object_etag")
    if locked.object_deleted_at and locked.object_deleted_at <= seen_at:
        locked.object_deleted_at = None
        fields.append("object_deleted_at")
    if state in (UploadState.FAILED, UploadState.LINKED):
        # A new object (or one the last round never found) starts a new round of attempts.
        locked.attempts = 0
        locked.last_error = ""
        fields += ["attempts", "last_error"]
    locked.save(update_fields=fields)
    for name in fields:
        setattr(upload, name, getattr(locked, name))
    log.info("upload %s: object seen (%s → uploaded, trigger %s)", upload.pk, state, trigger)
    enqueue_link(upload.pk, trigger=trigger)
    return True


def _storable_text(raw_body: str | bytes) -> tuple[str, bool]:
    text = raw_body.decode("utf-8", errors="replace") if isinstance(raw_body, bytes) else raw_body
    # PostgreSQL text cannot hold NUL or lone surrogates.
    text = text.replace("\x00", "\ufffd").encode("utf-8", errors="replace").decode("utf-8")
    if len(text) > MAX_RAW_BODY_CHARS:
        return text[:MAX_RAW_BODY_CHARS], True
    return text, False


@transaction.atomic
def record_unparseable(*, source: str, raw_body: str | bytes, error: str) -> RecordResult:
    """Keep a message that could not be read (raw, bounded), so it is shown rather than dropped."""
    raw = raw_body if isinstance(raw_body, bytes) else raw_body.encode("utf-8", errors="surrogatepass")
    dedupe_key = hashlib.sha256(b"unparseable\x00" + raw).hexdigest()
    text, truncated = _storable_text(raw_body)
    message = error[:MAX_PARSE_ERROR_CHARS]
    if truncated:
        message += f" (body truncated to {MAX_RAW_BODY_CHARS} characters of {len(raw)} bytes)"
    stored, created = _create_once(
        {
            "source": source,
            "status": EventStatus.UNPARSEABLE,
            "action": EventAction.UNKNOWN,
            "raw_body": text,
            "parse_error": message,
        },
        dedupe_key,
        timezone.now(),
    )
    if created:
        log.warning("kept an unreadable %s message (event %s): %s", source, stored.pk, message)
    return RecordResult(event=stored, duplicate=not created)


@transaction.atomic
def record_client_complete(*, upload_id: UUID, info: ObjectInfo) -> RecordResult:
    """The client says its upload finished and a HEAD found the object: record it and mark it seen.

    Raises Upload.DoesNotExist for an unknown upload. One event per object (a repeated call is
    counted as a delivery); marking seen runs every time, since it is idempotent and a repeat
    after a link that found nothing must still link now.
    """
    upload = Upload.objects.get(pk=upload_id)
    now = timezone.now()
    dedupe_key = hashlib.sha256(
        f"client-complete\x00{upload.pk}\x00{storage.normal_etag(info.etag)}".encode()
    ).hexdigest()
    stored, created = _create_once(
        {
            "source": EventSource.CLIENT,
            "status": EventStatus.MATCHED,
            "action": EventAction.CREATED,
            "event_name": CLIENT_COMPLETE_EVENT,
            "bucket": upload.bucket,
            "key": upload.key,
            "size": info.size,
            "etag": info.etag,
            "event_time": now,
            "upload": upload,
        },
        dedupe_key,
        now,
    )
    mark_object_seen(upload, size=info.size, etag=info.etag, seen_at=now, trigger=LinkTrigger.COMPLETE)
    return RecordResult(event=stored, duplicate=not created)
