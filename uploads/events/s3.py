"""S3 event notifications ``{"Records": [...]}``, as SQS receives them directly or wrapped in an SNS envelope."""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote_plus

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
    _etag,
    _key,
    _kind,
    _obj,
    _size,
    _text,
    _time,
    parse_json_bytes,
)


def _s3_action(event_name: str) -> Action:
    name = event_name.removeprefix("s3:")
    if name.startswith("ObjectCreated:"):
        return "created"
    if name.startswith("ObjectRemoved:"):
        return "deleted"
    raise EventParseError(f"S3 event {event_name!r} is neither ObjectCreated:* nor ObjectRemoved:*")


def _s3_record(record: Any, where: str) -> ObjectEvent:
    record = _obj(record, where)
    _check_storable(record, where)
    event_name = _text(record.get("eventName"), f"{where}.eventName", limit=MAX_EVENT_NAME_CHARS)
    action = _s3_action(event_name)
    s3 = _obj(record.get("s3"), f"{where}.s3")
    bucket = _obj(s3.get("bucket"), f"{where}.s3.bucket")
    obj = _obj(s3.get("object"), f"{where}.s3.object")
    raw_key = _text(obj.get("key"), f"{where}.s3.object.key", limit=4 * MAX_KEY_BYTES)
    return ObjectEvent(
        action=action,
        event_name=event_name,
        bucket=_text(bucket.get("name"), f"{where}.s3.bucket.name", limit=MAX_BUCKET_CHARS),
        key=_s3_key(raw_key, f"{where}.s3.object.key"),
        size=_size(obj.get("size"), f"{where}.s3.object.size"),
        etag=_etag(obj.get("eTag"), f"{where}.s3.object.eTag"),
        event_time=_time(record.get("eventTime"), f"{where}.eventTime"),
        sequencer=_text(
            obj.get("sequencer"), f"{where}.s3.object.sequencer", limit=MAX_SEQUENCER_CHARS, required=False
        ),
        payload=record,
    )


def _s3_key(raw_key: str, what: str) -> str:
    # S3 URL-encodes keys quote_plus style: space is "+", "+" is "%2B".
    try:
        return _key(unquote_plus(raw_key, errors="strict"), what)
    except UnicodeDecodeError:
        raise EventParseError(f"{what} is not URL-encoded UTF-8") from None


def parse_s3_body(data: Any) -> list[ObjectEvent]:
    """Events in an S3 notification ``{"Records": [...]}`` (also wrapped by SNS); the test event gives []."""
    data = _obj(data, "the S3 notification")
    if data.get("Type") == "Notification" and isinstance(data.get("Message"), str):
        return parse_s3_body(parse_json_bytes(data["Message"]))
    if "Records" not in data:
        if data.get("Event") == "s3:TestEvent":
            return []
        raise EventParseError("the S3 notification has no Records")
    records = data["Records"]
    if not isinstance(records, list):
        raise EventParseError(f"Records must be a list, not {_kind(records)}")
    return [_s3_record(record, f"Records[{i}]") for i, record in enumerate(_bounded(records, "Records"))]
