"""S3 events through SNS with raw message delivery (S3 → SNS topic → SQS, ``RawMessageDelivery=true``).

With raw delivery SNS puts the published message itself in the SQS body: the S3 notification
JSON ``{"Records": [...]}`` (or S3's test event), byte for byte what S3 → SQS direct delivers, so
the records are read by the S3 parser. What this module adds is the other half of telling the
routes apart: a raw body must not be an SNS envelope, and an envelope (raw delivery off) is
unwrapped here, once, whatever its message holds (an S3 notification or an EventBridge event
published to the topic).
"""

from __future__ import annotations

from typing import Any

from uploads.events.common import EventParseError, ObjectEvent, _kind, _obj, parse_json_bytes
from uploads.events.s3 import parse_s3_body

SNS_NOTIFICATION = "Notification"


def is_sns_envelope(data: Any) -> bool:
    """Whether a decoded body is an SNS envelope (``{"Type": "Notification", "Message": "..."}``)."""
    return isinstance(data, dict) and data.get("Type") == SNS_NOTIFICATION and "Message" in data


def unwrap_sns_envelope(data: Any) -> Any:
    """The decoded JSON message inside an SNS envelope; a nested envelope is refused."""
    data = _obj(data, "the SNS envelope")
    message = data.get("Message")
    if not isinstance(message, str):
        raise EventParseError(f"the SNS envelope's Message must be a string, not {_kind(message)}")
    inner = parse_json_bytes(message)
    if is_sns_envelope(inner):
        raise EventParseError("the SNS envelope holds another SNS envelope")
    return inner


def parse_sns_raw_body(data: Any) -> list[ObjectEvent]:
    """Events in an S3 notification delivered raw by SNS (or directly by S3); an envelope is refused."""
    if is_sns_envelope(data):
        raise EventParseError("the body is an SNS envelope, not a raw message (raw message delivery is off)")
    return parse_s3_body(data)
