"""The events package keeps every name the former single module ``uploads/events.py`` defined."""

from __future__ import annotations

import uploads.events

# Every top-level name uploads/events.py defined before it became a package (other modules,
# e.g. uploads.events.azure, import the underscore helpers from here).
FORMER_NAMES = [
    "Action",
    "EventParseError",
    "MAX_BUCKET_CHARS",
    "MAX_ETAG_CHARS",
    "MAX_EVENTS_PER_BODY",
    "MAX_EVENT_NAME_CHARS",
    "MAX_KEY_BYTES",
    "MAX_NESTING",
    "MAX_SEQUENCER_CHARS",
    "MAX_SIZE",
    "ObjectEvent",
    "R2_ACTIONS",
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
    "parse_json_bytes",
    "parse_r2_body",
    "parse_r2_pulled_message",
    "parse_s3_body",
]


def test_every_former_name_is_still_importable_from_uploads_events():
    missing = [name for name in FORMER_NAMES if not hasattr(uploads.events, name)]
    assert missing == []


def test_the_package_exports_the_shared_objects_not_copies():
    from uploads.events import common, r2, s3

    assert uploads.events.ObjectEvent is common.ObjectEvent
    assert uploads.events.EventParseError is common.EventParseError
    assert uploads.events.parse_s3_body is s3.parse_s3_body
    assert uploads.events.parse_r2_body is r2.parse_r2_body
    assert set(FORMER_NAMES) <= set(uploads.events.__all__)
