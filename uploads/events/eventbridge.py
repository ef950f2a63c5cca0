"""S3 events delivered through Amazon EventBridge (S3 → EventBridge rule → SQS target).

The SQS message body is the EventBridge event itself (a rule target without an input
transformer): ``{"version", "id", "detail-type", "source": "aws.s3", "time", "resources",
"detail": {"bucket": {"name"}, "object": {"key", "size", "etag", "sequencer", ...}, "reason"}}``.
Only ``Object Created`` and ``Object Deleted`` are storage events for this service; the rule
should match just those two (docs/events.md gives the pattern).

The object key is URL-encoded as in S3 event notifications (``quote_plus`` style), so it is
decoded the same way; ``size`` is absent from ``Object Deleted``.
"""

from __future__ import annotations

from typing import Any

from uploads.events.common import (
    MAX_BUCKET_CHARS,
    MAX_EVENT_NAME_CHARS,
    MAX_KEY_BYTES,
    MAX_SEQUENCER_CHARS,
    Action,
    EventParseError,
    ObjectEvent,
    _check_storable,
    _etag,
    _obj,
    _size,
    _text,
    _time,
)
from uploads.events.s3 import _s3_key

EVENTBRIDGE_SOURCE = "aws.s3"
EVENTBRIDGE_ACTIONS: dict[str, Action] = {"Object Created": "created", "Object Deleted": "deleted"}


def is_eventbridge_event(data: Any) -> bool:
    """Whether a decoded body has EventBridge's envelope (``detail-type`` and ``detail``)."""
    return isinstance(data, dict) and "detail-type" in data and "detail" in data


def parse_eventbridge_event(data: Any) -> list[ObjectEvent]:
    """The one S3 object event in an EventBridge event, or EventParseError saying why not."""
    where = "the EventBridge event"
    data = _obj(data, where)
    _check_storable(data, where)
    source = _text(data.get("source"), "source", limit=MAX_EVENT_NAME_CHARS)
    if source != EVENTBRIDGE_SOURCE:
        raise EventParseError(f"the EventBridge event comes from {source!r}, not {EVENTBRIDGE_SOURCE!r}")
    detail_type = _text(data.get("detail-type"), "detail-type", limit=MAX_EVENT_NAME_CHARS)
    action = EVENTBRIDGE_ACTIONS.get(detail_type)
    if action is None:
        raise EventParseError(
            f"EventBridge detail-type {detail_type!r} is neither {' nor '.join(map(repr, EVENTBRIDGE_ACTIONS))}"
        )
    detail = _obj(data.get("detail"), "detail")
    bucket = _obj(detail.get("bucket"), "detail.bucket")
    obj = _obj(detail.get("object"), "detail.object")
    reason = _text(detail.get("reason"), "detail.reason", limit=MAX_EVENT_NAME_CHARS, required=False)
    event_name = f"{detail_type}:{reason}" if reason else detail_type
    return [
        ObjectEvent(
            action=action,
            event_name=event_name[:MAX_EVENT_NAME_CHARS],
            bucket=_text(bucket.get("name"), "detail.bucket.name", limit=MAX_BUCKET_CHARS),
            key=_s3_key(_text(obj.get("key"), "detail.object.key", limit=4 * MAX_KEY_BYTES), "detail.object.key"),
            size=_size(obj.get("size"), "detail.object.size"),
            etag=_etag(obj.get("etag"), "detail.object.etag"),
            event_time=_time(data.get("time"), "time"),
            sequencer=_text(obj.get("sequencer"), "detail.object.sequencer", limit=MAX_SEQUENCER_CHARS, required=False),
            payload=data,
        )
    ]
