"""Pure parsing of Azure Event Grid blob events into the one normalised ``ObjectEvent`` (no ORM, no settings).

Event Grid delivers ``Microsoft.Storage.BlobCreated`` / ``BlobDeleted`` in one of two schemas, both
read here: the Event Grid schema (``eventType``, ``eventTime``; a webhook gets a JSON array) and
CloudEvents 1.0 (``type``, ``time``, ``specversion``; one event, or an array in batched mode). A
Storage Queue destination holds one event per message, base64-encoded JSON. The container and the
blob name come from the ``subject`` (``/blobServices/default/containers/<c>/blobs/<name>``, the
name as stored, not URL-encoded); size, ETag and sequencer from ``data``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from uploads.events.common import (
    MAX_BUCKET_CHARS,
    MAX_EVENT_NAME_CHARS,
    MAX_KEY_BYTES,
    MAX_SEQUENCER_CHARS,
    Action,
    EventParseError,
    ObjectEvent,
    _bounded,
    _check_storable,
    _decode_body,
    _etag,
    _key,
    _kind,
    _obj,
    _size,
    _text,
    _time,
)

BLOB_ACTIONS: dict[str, Action] = {
    "Microsoft.Storage.BlobCreated": "created",
    "Microsoft.Storage.BlobDeleted": "deleted",
}
VALIDATION_EVENT = "Microsoft.EventGrid.SubscriptionValidationEvent"
SUBJECT_PREFIX = "/blobServices/default/containers/"
_BLOBS = "/blobs/"


@dataclass(frozen=True)
class ValidationRequest:
    """Event Grid's subscription handshake (Event Grid schema): answer ``{"validationResponse": code}``."""

    validation_code: str


def _event_type(event: dict[str, Any], where: str) -> tuple[str, str]:
    """The event's type and the name of the field it came in (``eventType`` or CloudEvents' ``type``)."""
    if "eventType" in event:
        return _text(event["eventType"], f"{where}.eventType", limit=MAX_EVENT_NAME_CHARS), "eventType"
    if "type" in event:
        return _text(event["type"], f"{where}.type", limit=MAX_EVENT_NAME_CHARS), "type"
    raise EventParseError(f"{where} has neither eventType (Event Grid schema) nor type (CloudEvents)")


def _subject(value: Any, where: str) -> tuple[str, str]:
    subject = _text(value, where, limit=MAX_BUCKET_CHARS + 4 * MAX_KEY_BYTES)
    if not subject.startswith(SUBJECT_PREFIX) or _BLOBS not in subject[len(SUBJECT_PREFIX) :]:
        raise EventParseError(f"{where} is not /blobServices/default/containers/<container>/blobs/<name>")
    container, name = subject[len(SUBJECT_PREFIX) :].split(_BLOBS, 1)
    if not container or "/" in container:
        raise EventParseError(f"{where} names no container")
    if len(container) > MAX_BUCKET_CHARS:
        raise EventParseError(f"{where}: the container name is longer than {MAX_BUCKET_CHARS} characters")
    return container, _key(name, f"{where} (blob name)")


def _blob_event(event: Any, where: str) -> ObjectEvent:
    event = _obj(event, where)
    _check_storable(event, where)
    event_type, type_field = _event_type(event, where)
    action = BLOB_ACTIONS.get(event_type)
    if action is None:
        raise EventParseError(f"Event Grid event {event_type!r} is not one of {', '.join(BLOB_ACTIONS)}")
    if type_field == "type" and event.get("specversion") != "1.0":
        raise EventParseError(f"{where}.specversion must be '1.0' for a CloudEvent")
    container, key = _subject(event.get("subject"), f"{where}.subject")
    data = _obj(event.get("data"), f"{where}.data")
    time_field = "eventTime" if type_field == "eventType" else "time"
    return ObjectEvent(
        action=action,
        event_name=event_type,
        bucket=container,
        key=key,
        size=_size(data.get("contentLength"), f"{where}.data.contentLength") if action == "created" else None,
        etag=_etag(data.get("eTag"), f"{where}.data.eTag"),
        event_time=_time(event.get(time_field), f"{where}.{time_field}"),
        sequencer=_text(data.get("sequencer"), f"{where}.data.sequencer", limit=MAX_SEQUENCER_CHARS, required=False),
        payload=event,
    )


def _events(data: Any, what: str) -> list[Any]:
    if isinstance(data, list):
        return _bounded(data, what)
    if isinstance(data, dict):
        return [data]
    raise EventParseError(f"{what} must be a JSON object or a list of them, not {_kind(data)}")


def validation_request(data: Any) -> ValidationRequest | None:
    """The subscription validation handshake in a pushed body, or None when the body holds events."""
    items = data if isinstance(data, list) else [data]
    for i, item in enumerate(items):
        if isinstance(item, dict) and item.get("eventType") == VALIDATION_EVENT:
            where = f"[{i}]" if isinstance(data, list) else "the event"
            payload = _obj(item.get("data"), f"{where}.data")
            return ValidationRequest(_text(payload.get("validationCode"), f"{where}.data.validationCode", limit=200))
    return None


def parse_event_grid_body(data: Any) -> list[ObjectEvent]:
    """Blob events pushed by Event Grid: an array (either schema), or one CloudEvent."""
    items = _events(data, "the Event Grid body")
    where = "[{}]" if isinstance(data, list) else "the event"
    return [_blob_event(item, where.format(i)) for i, item in enumerate(items)]


def parse_azure_queue_message(content: Any) -> list[ObjectEvent]:
    """Blob events in one Storage Queue message: base64 of JSON as Event Grid writes it (or plain JSON)."""
    return parse_event_grid_body(_decode_body(content, "the queue message"))
