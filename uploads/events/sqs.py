"""Which S3 route an SQS message body came through, recognised per message, and its events.

One queue can be fed by more than one route (while an operator moves from S3 notifications to
EventBridge, say), and the shapes cannot be mistaken for one another, so each message is read
by its own shape rather than by a setting that a migration would get wrong for half the queue:

- ``{"Records": [...]}``: S3 → SQS directly, or S3 → SNS → SQS with raw message delivery (the
  same bytes), read by ``sns_raw`` / ``s3``;
- ``{"Type": "Notification", "Message": "..."}``: the SNS envelope (raw delivery off), unwrapped
  once and its message read by these same rules;
- ``{"detail-type", "source": "aws.s3", "detail"}``: S3 → EventBridge → SQS, read by ``eventbridge``;
- ``{"Event": "s3:TestEvent"}``: S3's test event when a notification is configured, no events.

Anything else is an ``EventParseError`` naming the shapes it could have been.
"""

from __future__ import annotations

from typing import Any, Literal

from uploads.events.common import EventParseError, ObjectEvent, _obj, parse_json_bytes
from uploads.events.eventbridge import is_eventbridge_event, parse_eventbridge_event
from uploads.events.sns_raw import is_sns_envelope, parse_sns_raw_body, unwrap_sns_envelope

Shape = Literal["s3", "sns", "eventbridge", "s3-test-event"]
S3_TEST_EVENT = "s3:TestEvent"


def sqs_body_shape(data: Any) -> Shape:
    """The route a decoded SQS body's shape says it came through, or EventParseError."""
    data = _obj(data, "the SQS message body")
    if is_sns_envelope(data):
        return "sns"
    if is_eventbridge_event(data):
        return "eventbridge"
    if "Records" in data:
        return "s3"
    if data.get("Event") == S3_TEST_EVENT:
        return "s3-test-event"
    raise EventParseError(
        "the SQS message body is none of: an S3 notification (Records), an SNS envelope "
        "(Type Notification), an EventBridge event (detail-type, detail), the S3 test event"
    )


def parse_sqs_data(data: Any) -> list[ObjectEvent]:
    """Events in one decoded SQS message body from any S3 route (see the module docstring)."""
    shape = sqs_body_shape(data)
    if shape == "sns":
        # unwrap_sns_envelope refuses an envelope inside an envelope, so this recurses once.
        return parse_sqs_data(unwrap_sns_envelope(data))
    if shape == "eventbridge":
        return parse_eventbridge_event(data)
    if shape == "s3-test-event":
        return []
    return parse_sns_raw_body(data)


def parse_sqs_body(raw: bytes | str) -> list[ObjectEvent]:
    """Events in one SQS message body from any S3 route (see the module docstring)."""
    return parse_sqs_data(parse_json_bytes(raw))
