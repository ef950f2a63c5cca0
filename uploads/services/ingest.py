"""Record storage events (and the client's ``complete`` hint) in the ledger, once each, set-based.

Every path that says "an object was seen" ends here: events are deduplicated by their content,
a duplicate only counts a delivery, and a new event moves its Upload and enqueues the link,
which workers see once it commits. A body, a queue batch or any list of events costs a constant number of SQL
statements whatever its length (:func:`record_batch`): one SELECT of the matching uploads, one
INSERT of the events that counts repeats in place (``ON CONFLICT DO UPDATE``), one UPDATE of
the uploads that move, and one push of all their link tasks (visible to workers once it commits).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from django.db import DEFAULT_DB_ALIAS, connections, transaction
from django.db.models import DateTimeField, Field
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
from uploads.services.dispatch import enqueue_link, enqueue_links
from uploads.services.link import OBJECT_NOT_FOUND
from uploads.storage import ObjectInfo

log = logging.getLogger(__name__)

MAX_RAW_BODY_CHARS = 64 * 1024
MAX_PARSE_ERROR_CHARS = 2000
CLIENT_COMPLETE_EVENT = "client:complete"


@dataclass(frozen=True)
class Unreadable:
    """A message that could not be parsed: kept raw (bounded) so it is shown rather than dropped."""

    raw_body: str | bytes
    error: str


@dataclass(frozen=True)
class RecordResult:
    """What recording one event (or unreadable message) did."""

    event_id: int
    status: str
    duplicate: bool

    @property
    def unmatched(self) -> bool:
        return self.status == EventStatus.UNMATCHED

    @property
    def unparseable(self) -> bool:
        return self.status == EventStatus.UNPARSEABLE


# --- the one INSERT ---------------------------------------------------------------------------

_EVENT_FIELDS: list[Field[Any, Any]] = [f for f in StorageEvent._meta.concrete_fields if not f.primary_key]
assert all(f.attname == f.column for f in _EVENT_FIELDS), "a Row's keys double as column names"
Row = dict[str, Any]  # a StorageEvent's column values by attribute name


class _Params:
    """Values as the database takes them (each distinct time prepared once: a batch shares ``now``)."""

    def __init__(self) -> None:
        self.db = connections[DEFAULT_DB_ALIAS]  # the connection itself: the proxy costs a lookup per call
        self.times: dict[datetime, Any] = {}

    def of(self, field: Field[Any, Any], value: Any) -> Any:
        if isinstance(value, datetime) and isinstance(field, DateTimeField):
            prepared = self.times.get(value)
            if prepared is None:
                prepared = self.times[value] = field.get_db_prep_save(value, self.db)
            return prepared
        return field.get_db_prep_save(value, self.db)


def _new_row(**values: Any) -> Row:
    return {f.attname: values[f.attname] if f.attname in values else f.get_default() for f in _EVENT_FIELDS}


def _upsert_events(rows: dict[str, Row], params: _Params) -> dict[str, tuple[int, str, bool]]:
    """Insert new events and count repeats of known ones, in one statement.

    ``rows`` maps a dedupe key to an event's values, whose ``deliveries`` is how often it occurs
    in this batch. Returns, per dedupe key, (id, stored status, created). A row that existed comes
    back with more deliveries than this batch brought, so "created" needs no second read; a
    concurrent insert of the same event is counted, not crashed (the unique index decides).
    """
    if not rows:
        return {}
    db = params.db
    quote = db.ops.quote_name
    table = quote(StorageEvent._meta.db_table)
    columns = ", ".join(quote(f.column) for f in _EVENT_FIELDS)
    deliveries, received = quote("deliveries"), quote("last_received_at")
    # Sorted, so concurrent batches lock existing rows in the same order (no deadlock).
    ordered = [row for _, row in sorted(rows.items())]
    if db.vendor == "postgresql":
        # A row's keys are attribute names, which are also its column names (asserted above).
        source, values = _pg_rows(db, _EVENT_FIELDS, ordered)
    else:
        placeholder = "(" + ", ".join(["%s"] * len(_EVENT_FIELDS)) + ")"
        source, values = f"VALUES {', '.join([placeholder] * len(ordered))}", []
        for row in ordered:
            values += [params.of(f, row[f.attname]) for f in _EVENT_FIELDS]
    # Identifiers only from the model's metadata, quoted by the backend; every value is a parameter.
    sql = (
        f"INSERT INTO {table} ({columns}) {source} "
        f"ON CONFLICT ({quote('dedupe_key')}) DO UPDATE SET "
        f"{deliveries} = {table}.{deliveries} + EXCLUDED.{deliveries}, {received} = EXCLUDED.{received} "
        f"RETURNING {quote('id')}, {quote('dedupe_key')}, {deliveries}, {quote('status')}"
    )
    with db.cursor() as cursor:
        cursor.execute(sql, values)
        returned = cursor.fetchall()
    return {key: (pk, status, count == rows[key]["deliveries"]) for pk, key, count, status in returned}


def _json_value(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, UUID):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not a column value")


def _pg_rows(db: Any, fields: Sequence[Field[Any, Any]], rows: Sequence[Row]) -> tuple[str, list[Any]]:
    """PostgreSQL: rows (dicts by column name) as one JSON parameter, typed by the model's columns.

    One short, constant statement whatever the batch size: psycopg (which binds client-side)
    parses a query of thousands of placeholders anew each time, and that cost more than
    PostgreSQL's own work (measured in docs/benchmarks.md, "Event ingest"). A missing key is NULL.
    """
    quote = db.ops.quote_name
    columns = ", ".join(quote(f.column) for f in fields)
    types = ", ".join(f"{quote(f.column)} {f.db_type(db)}" for f in fields)
    text = json.dumps(rows, default=_json_value, ensure_ascii=False, separators=(",", ":"))
    # Identifiers and types only from the model's metadata; the rows are the parameter.
    return f"SELECT {columns} FROM jsonb_to_recordset(%s::jsonb) AS v ({types})", [text]  # noqa: S608


# --- the one UPDATE ---------------------------------------------------------------------------

_MOVING_FIELDS = [
    "state",
    "object_seen_at",
    "next_attempt_at",
    "object_size",
    "object_etag",
    "object_deleted_at",
    "attempts",
    "last_error",
    "updated_at",
]


@dataclass(slots=True)
class _Locked:
    """An upload as a batch's locked SELECT reads it: what the rules read and write, no more.

    Not a model instance: 90 of those cost about 1 ms a body, as much as the locked SELECT's own
    SQL (measured in docs/benchmarks.md, "Event ingest"). The rules and the UPDATE take either.
    """

    id: UUID
    key: str
    bucket: str
    state: str
    object_seen_at: datetime | None
    next_attempt_at: datetime | None
    object_size: int | None
    object_etag: str
    object_deleted_at: datetime | None
    attempts: int
    last_error: str
    updated_at: datetime

    @property
    def pk(self) -> UUID:
        return self.id


_LOCKED_FIELDS = [f.name for f in dataclasses.fields(_Locked)]
assert _LOCKED_FIELDS == ["id", "key", "bucket", *_MOVING_FIELDS], "_Locked holds the moving fields"


def _update_uploads(uploads: Sequence[Upload | _Locked], params: _Params) -> None:
    """Write the moving fields of these (locked, changed) uploads in one UPDATE ... FROM (their values)."""
    if not uploads:
        return
    db = params.db
    quote = db.ops.quote_name
    fields: list[Field[Any, Any]] = [Upload._meta.get_field(name) for name in ["id", *_MOVING_FIELDS]]  # type: ignore[misc]
    table = quote(Upload._meta.db_table)
    names = [quote(f.column) for f in fields]
    ordered = sorted(uploads, key=lambda u: str(u.pk))
    assignments = ", ".join(f"{name} = v.{name}" for name in names[1:])
    if db.vendor == "postgresql":
        rows = [{f.column: getattr(upload, f.attname) for f in fields} for upload in ordered]
        source, values = _pg_rows(db, fields, rows)
        source = f"({source})"
    else:
        placeholder = "(" + ", ".join(["%s"] * len(fields)) + ")"
        source, values = f"(VALUES {', '.join([placeholder] * len(ordered))})", []
        for upload in ordered:
            values += [params.of(f, getattr(upload, f.attname)) for f in fields]
    # Identifiers only from the model's metadata, quoted by the backend; every value is a parameter.
    sql = (
        f"WITH v ({', '.join(names)}) AS {source} "  # noqa: S608
        f"UPDATE {table} SET {assignments} FROM v WHERE {table}.{names[0]} = v.{names[0]}"
    )
    with db.cursor() as cursor:
        cursor.execute(sql, values)


# --- the rules (one place, for one upload and for a batch) -----------------------------------


def _apply_seen(
    upload: Upload | _Locked, *, size: int | None, etag: str, seen_at: datetime, now: datetime, trigger: str
) -> list[str] | None:
    """Move an upload (read under lock) to ``uploaded`` for this object; the changed fields, or None.

    issued/expired → uploaded; failed/linked → uploaded only for a different object (a re-PUT
    through the same URL, told apart by its ETag); uploaded stays uploaded (a link is re-enqueued
    when the object is new to the ledger); superseded and aborted are left alone. A link that
    looked and found no object is news either way: its upload is linked now, not at its backoff
    (also when every attempt ran before the PUT landed and it ended failed).
    """
    state = upload.state
    new_object = bool(etag) and storage.normal_etag(etag) != storage.normal_etag(upload.object_etag)
    # The last link HEADed and found nothing: this hint says otherwise.
    missed = upload.last_error.startswith(OBJECT_NOT_FOUND)
    if state in (UploadState.SUPERSEDED, UploadState.ABORTED):
        return None
    if state == UploadState.LINKED and not new_object:
        return None
    if state == UploadState.FAILED and not (new_object or missed):
        return None
    if state == UploadState.UPLOADED and not (new_object or missed) and upload.object_seen_at is not None:
        return None

    fields = ["state", "object_seen_at", "next_attempt_at", "updated_at"]
    upload.state = UploadState.UPLOADED
    upload.object_seen_at = seen_at
    upload.next_attempt_at = now
    upload.updated_at = now
    if size is not None:
        upload.object_size = size
        fields.append("object_size")
    if etag:
        upload.object_etag = etag.strip().strip('"')
        fields.append("object_etag")
    if upload.object_deleted_at and upload.object_deleted_at <= seen_at:
        upload.object_deleted_at = None
        fields.append("object_deleted_at")
    if state in (UploadState.FAILED, UploadState.LINKED):
        # A new object (or one the last round never found) starts a new round of attempts.
        upload.attempts = 0
        upload.last_error = ""
        fields += ["attempts", "last_error"]
    log.info("upload %s: object seen (%s → uploaded, trigger %s)", upload.pk, state, trigger)
    return fields


def _apply_deleted(upload: Upload | _Locked, *, deleted_at: datetime, now: datetime) -> bool:
    """Flag the upload for the dashboard: its object was deleted from the bucket (unless older news)."""
    if upload.object_deleted_at and upload.object_deleted_at >= deleted_at:
        return False
    upload.object_deleted_at = deleted_at
    upload.updated_at = now
    log.warning("the object of upload %s (%s) was deleted", upload.pk, upload.state)
    return True


def _sequencer(value: str, width: int) -> str:
    # S3 sequencers of one key compare as hex text once right-padded with zeros (greater is later).
    return value.upper().ljust(width, "0")


def _in_event_order(events: list[ObjectEvent], now: datetime) -> list[ObjectEvent]:
    """One upload's new events of a batch in the order they happened: sequencer, else event time.

    Delivery is unordered; sorting keeps a batch from doing worse than its events taken one by
    one in the right order. Ties (and events without either) keep their order of arrival.
    """
    if len(events) < 2:
        return events
    if all(e.sequencer for e in events):
        width = max(len(e.sequencer) for e in events)
        return sorted(events, key=lambda e: _sequencer(e.sequencer, width))
    return sorted(events, key=lambda e: e.event_time or now)


# --- recording --------------------------------------------------------------------------------


def _storable_text(raw_body: str | bytes) -> tuple[str, bool]:
    text = raw_body.decode("utf-8", errors="replace") if isinstance(raw_body, bytes) else raw_body
    # PostgreSQL text cannot hold NUL or lone surrogates.
    text = text.replace("\x00", "\ufffd").encode("utf-8", errors="replace").decode("utf-8")
    if len(text) > MAX_RAW_BODY_CHARS:
        return text[:MAX_RAW_BODY_CHARS], True
    return text, False


def _unreadable_row(source: str, item: Unreadable, now: datetime) -> tuple[str, Row]:
    raw = item.raw_body if isinstance(item.raw_body, bytes) else item.raw_body.encode("utf-8", errors="surrogatepass")
    dedupe_key = hashlib.sha256(b"unparseable\x00" + raw).hexdigest()
    text, truncated = _storable_text(item.raw_body)
    message = item.error[:MAX_PARSE_ERROR_CHARS]
    if truncated:
        message += f" (body truncated to {MAX_RAW_BODY_CHARS} characters of {len(raw)} bytes)"
    row = _new_row(
        source=source,
        dedupe_key=dedupe_key,
        status=EventStatus.UNPARSEABLE,
        action=EventAction.UNKNOWN,
        raw_body=text,
        parse_error=message,
        first_received_at=now,
        last_received_at=now,
        deliveries=0,
    )
    return dedupe_key, row


def _event_row(source: str, event: ObjectEvent, dedupe_key: str, upload: _Locked | None, now: datetime) -> Row:
    return _new_row(
        source=source,
        dedupe_key=dedupe_key,
        status=EventStatus.MATCHED if upload else EventStatus.UNMATCHED,
        action=event.action,
        event_name=event.event_name,
        bucket=event.bucket,
        key=event.key,
        size=event.size,
        etag=event.etag,
        event_time=event.event_time,
        sequencer=event.sequencer,
        payload=event.payload,
        upload_id=upload.pk if upload else None,
        first_received_at=now,
        last_received_at=now,
        deliveries=0,
    )


# No savepoint of its own: every caller lets a failure abort its whole transaction anyway.
@transaction.atomic(savepoint=False)
def record_batch(*, source: str, items: Sequence[ObjectEvent | Unreadable]) -> list[RecordResult]:
    """Record a batch of events and unreadable messages in a constant number of statements.

    Returns one result per item, in order. Within the batch, a repeat of an earlier item is a
    duplicate (counted as a delivery), as it would be recorded one after the other. The new
    events of one upload are applied in their order (sequencer, else event time); its link is
    enqueued once (visible to workers when the batch commits).
    """
    if not items:
        return []
    now = timezone.now()
    keys = [item.dedupe_key if isinstance(item, ObjectEvent) else "" for item in items]
    wanted = {item.key for item in items if isinstance(item, ObjectEvent)}
    uploads: dict[str, _Locked] = {}
    if wanted:
        # Locked (PostgreSQL), in one order for everyone, so concurrent batches cannot deadlock.
        found = Upload.objects.select_for_update().filter(key__in=wanted).order_by("pk")
        uploads = {row[1]: _Locked(*row) for row in found.values_list(*_LOCKED_FIELDS)}

    params = _Params()
    rows: dict[str, Row] = {}
    firsts: dict[str, int] = {}
    for index, item in enumerate(items):
        if isinstance(item, ObjectEvent):
            key = keys[index]
            if key not in rows:
                upload = uploads.get(item.key)
                match = upload if upload and upload.bucket == item.bucket else None
                rows[key] = _event_row(source, item, key, match, now)
        else:
            key, row = _unreadable_row(source, item, now)
            keys[index] = key
            rows.setdefault(key, row)
        rows[key]["deliveries"] += 1
        firsts.setdefault(key, index)
    stored = _upsert_events(rows, params)

    results = []
    fresh: dict[UUID, list[ObjectEvent]] = {}
    unmatched: list[ObjectEvent] = []
    for index, item in enumerate(items):
        pk, status, created = stored[keys[index]]
        new = created and firsts[keys[index]] == index
        results.append(RecordResult(event_id=pk, status=status, duplicate=not new))
        if not new:
            continue
        if isinstance(item, Unreadable):
            log.warning("kept an unreadable %s message (event %s): %s", source, pk, rows[keys[index]]["parse_error"])
        elif rows[keys[index]]["upload_id"] is None:
            unmatched.append(item)
        else:
            fresh.setdefault(uploads[item.key].pk, []).append(item)
    if unmatched:
        first = unmatched[0]
        log.info("%d unmatched events (the first: %s %s/%s)", len(unmatched), first.action, first.bucket, first.key)

    moved: list[_Locked] = []
    links: list[tuple[UUID, str, str]] = []
    for events in fresh.values():
        upload = uploads[events[0].key]
        changed = relink = False
        for event in _in_event_order(events, now):
            seen_at = event.event_time or now
            if event.action == EventAction.CREATED:
                seen = _apply_seen(
                    upload, size=event.size, etag=event.etag, seen_at=seen_at, now=now, trigger=LinkTrigger.EVENT
                )
                relink = relink or seen is not None
                changed = changed or seen is not None
            else:
                changed = _apply_deleted(upload, deleted_at=seen_at, now=now) or changed
        if changed:
            moved.append(upload)
        if relink:
            links.append((upload.pk, LinkTrigger.EVENT, ""))
    _update_uploads(moved, params)
    enqueue_links(links)
    return results


def record_event(*, source: str, event: ObjectEvent) -> RecordResult:
    """Record one storage event (deduplicated); a new, matched event moves its Upload."""
    [result] = record_batch(source=source, items=[event])
    return result


def record_unparseable(*, source: str, raw_body: str | bytes, error: str) -> RecordResult:
    """Keep a message that could not be read (raw, bounded), so it is shown rather than dropped."""
    [result] = record_batch(source=source, items=[Unreadable(raw_body=raw_body, error=error)])
    return result


@transaction.atomic
def mark_object_seen(upload: Upload, *, size: int | None, etag: str, seen_at: datetime, trigger: str) -> bool:
    """Note that the upload's object exists; move the Upload to ``uploaded`` and enqueue its link.

    The rules are :func:`_apply_seen`'s. Returns True when a link was enqueued.
    """
    locked = Upload.objects.select_for_update().get(pk=upload.pk)
    fields = _apply_seen(locked, size=size, etag=etag, seen_at=seen_at, now=timezone.now(), trigger=trigger)
    if fields is None:
        return False
    locked.save(update_fields=fields)
    for name in fields:
        setattr(upload, name, getattr(locked, name))
    enqueue_link(upload.pk, trigger=trigger)
    return True


@transaction.atomic
def mark_objects_seen(found: Mapping[UUID, ObjectInfo], *, trigger: str, now: datetime | None = None) -> list[UUID]:
    """:func:`mark_object_seen` for many uploads at once: one locked SELECT, one UPDATE, one push.

    ``found`` maps upload ids to what a HEAD of their objects showed. The rules are
    :func:`_apply_seen`'s, so an upload another path moved meanwhile (an event, ``complete``)
    is left as it is. Returns the ids that moved, each with a link task.
    """
    if not found:
        return []
    now = now or timezone.now()
    locked = Upload.objects.select_for_update().filter(pk__in=list(found)).order_by("pk").only(*_MOVING_FIELDS)
    moved = [
        upload
        for upload in locked
        if _apply_seen(
            upload,
            size=found[upload.pk].size,
            etag=found[upload.pk].etag,
            seen_at=now,
            now=now,
            trigger=trigger,
        )
        is not None
    ]
    _update_uploads(moved, _Params())
    enqueue_links([(upload.pk, trigger, "") for upload in moved])
    return [upload.pk for upload in moved]


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
    row = _new_row(
        source=EventSource.CLIENT,
        dedupe_key=dedupe_key,
        status=EventStatus.MATCHED,
        action=EventAction.CREATED,
        event_name=CLIENT_COMPLETE_EVENT,
        bucket=upload.bucket,
        key=upload.key,
        size=info.size,
        etag=info.etag,
        event_time=now,
        upload_id=upload.pk,
        first_received_at=now,
        last_received_at=now,
        deliveries=1,
    )
    pk, status, created = _upsert_events({dedupe_key: row}, _Params())[dedupe_key]
    mark_object_seen(upload, size=info.size, etag=info.etag, seen_at=now, trigger=LinkTrigger.COMPLETE)
    return RecordResult(event_id=pk, status=status, duplicate=not created)
