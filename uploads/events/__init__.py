"""Pure parsing of storage event payloads into one normalised ``ObjectEvent`` (no ORM, no settings).

One module per event shape, all ending in ``ObjectEvent``:

- ``common``: ``ObjectEvent``, ``EventParseError``, strict JSON and the shared field validators;
- ``s3``: S3 notification records ``{"Records": [...]}``, also inside an SNS envelope;
- ``r2``: R2 notifications, Worker batches and messages pulled from a Cloudflare Queue;
- ``eventbridge``: S3 events through EventBridge (``Object Created`` / ``Object Deleted``);
- ``sns_raw``: S3 notifications through SNS with raw message delivery, and the SNS envelope;
- ``sqs``: which of those routes an SQS message body came through, recognised per message.

Every name the former single module ``uploads/events.py`` defined is re-exported here (the
underscore helpers too, for parsers in other modules such as ``uploads.events.azure``), so
``from uploads.events import ...`` keeps working.
"""

from __future__ import annotations

from uploads.events.common import (
    MAX_BUCKET_CHARS,
    MAX_ETAG_CHARS,
    MAX_EVENT_NAME_CHARS,
    MAX_EVENTS_PER_BODY,
    MAX_KEY_BYTES,
    MAX_NESTING,
    MAX_SEQUENCER_CHARS,
    MAX_SIZE,
    Action,
    EventParseError,
    ObjectEvent,
    _bounded,
    _check_storable,
    _decode_body,
    _etag,
    _finite_float,
    _key,
    _kind,
    _obj,
    _reject_constant,
    _size,
    _text,
    _time,
    parse_json_bytes,
)
from uploads.events.eventbridge import parse_eventbridge_event
from uploads.events.r2 import R2_ACTIONS, _r2_notification, parse_r2_body, parse_r2_pulled_message
from uploads.events.s3 import _s3_action, _s3_key, _s3_record, parse_s3_body
from uploads.events.sns_raw import parse_sns_raw_body
from uploads.events.sqs import parse_sqs_body, parse_sqs_data, sqs_body_shape

__all__ = [
    "MAX_BUCKET_CHARS",
    "MAX_ETAG_CHARS",
    "MAX_EVENTS_PER_BODY",
    "MAX_EVENT_NAME_CHARS",
    "MAX_KEY_BYTES",
    "MAX_NESTING",
    "MAX_SEQUENCER_CHARS",
    "MAX_SIZE",
    "R2_ACTIONS",
    "Action",
    "EventParseError",
    "ObjectEvent",
    "_bounded",
    "_check_storable",
    "_decode_body",
    "_etag",
    "_finite_float",
    "_key",
    "_kind",
    "_obj",
    "_r2_notification",
    "_reject_constant",
    "_s3_action",
    "_s3_key",
    "_s3_record",
    "_size",
    "_text",
    "_time",
    "parse_eventbridge_event",
    "parse_json_bytes",
    "parse_r2_body",
    "parse_r2_pulled_message",
    "parse_s3_body",
    "parse_sns_raw_body",
    "parse_sqs_body",
    "parse_sqs_data",
    "sqs_body_shape",
]
