"""R2 event notifications: one, a list, a Worker batch, or a message pulled from a Cloudflare Queue."""

from __future__ import annotations

from typing import Any

from uploads.events.common import (
    MAX_BUCKET_CHARS,
    MAX_EVENT_NAME_CHARS,
    MAX_KEY_BYTES,
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

R2_ACTIONS: dict[str, Action] = {
    "PutObject": "created",
    "CopyObject": "created",
    "CompleteMultipartUpload": "created",
    "DeleteObject": "deleted",
    "LifecycleDeletion": "deleted",
}


def _r2_notification(data: Any, where: str) -> ObjectEvent:
    data = _obj(data, where)
    _check_storable(data, where)
    action_name = _text(data.get("action"), f"{where}.action", limit=MAX_EVENT_NAME_CHARS)
    action = R2_ACTIONS.get(action_name)
    if action is None:
        raise EventParseError(f"R2 action {action_name!r} is not one of {', '.join(R2_ACTIONS)}")
    obj = _obj(data.get("object"), f"{where}.object")
    return ObjectEvent(
        action=action,
        event_name=action_name,
        bucket=_text(data.get("bucket"), f"{where}.bucket", limit=MAX_BUCKET_CHARS),
        # R2 sends keys as they are (not URL-encoded).
        key=_key(_text(obj.get("key"), f"{where}.object.key", limit=MAX_KEY_BYTES), f"{where}.object.key"),
        size=_size(obj.get("size"), f"{where}.object.size"),
        etag=_etag(obj.get("eTag"), f"{where}.object.eTag"),
        event_time=_time(data.get("eventTime"), f"{where}.eventTime"),
        sequencer="",
        payload=data,
    )


def parse_r2_body(data: Any) -> list[ObjectEvent]:
    """Events in an R2 notification, a list of them, or a Worker batch ``{"messages": [{"id", "body"}]}``."""
    if isinstance(data, list):
        return [_r2_notification(item, f"[{i}]") for i, item in enumerate(_bounded(data, "the list"))]
    data = _obj(data, "the R2 notification")
    if "messages" in data and "action" not in data:
        messages = data["messages"]
        if not isinstance(messages, list):
            raise EventParseError(f"messages must be a list, not {_kind(messages)}")
        events: list[ObjectEvent] = []
        for i, message in enumerate(_bounded(messages, "messages")):
            message = _obj(message, f"messages[{i}]")
            if "body" not in message:
                raise EventParseError(f"messages[{i}] has no body")
            events.append(_r2_notification(_decode_body(message["body"], f"messages[{i}].body"), f"messages[{i}].body"))
        return events
    return [_r2_notification(data, "the R2 notification")]


def parse_r2_pulled_message(message: Any) -> list[ObjectEvent]:
    """Events in one message pulled from a Cloudflare Queue (``{"id", "body", "lease_id", ...}``)."""
    message = _obj(message, "the pulled message")
    if "body" not in message:
        raise EventParseError("the pulled message has no body")
    metadata = message.get("metadata")
    if isinstance(metadata, dict) and metadata.get("CF-Content-Type") == "v8":
        raise EventParseError("the message body is of type v8, which only a Worker can read")
    return parse_r2_body(_decode_body(message["body"], "the message body"))
