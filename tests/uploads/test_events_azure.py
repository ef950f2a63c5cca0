"""Event Grid blob events (both schemas, from Microsoft's documented samples) into ObjectEvent."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime

import pytest

from tests.uploads.samples.azure_event_grid import (
    CLOUD_EVENT_BLOB_CREATED,
    CLOUD_EVENT_BLOB_DELETED,
    EVENT_GRID_BLOB_CREATED,
    EVENT_GRID_BLOB_DELETED,
    SUBSCRIPTION_VALIDATION,
)
from uploads.events import EventParseError, parse_json_bytes
from uploads.events.azure import parse_azure_queue_message, parse_event_grid_body, validation_request

CREATED = {"event grid": EVENT_GRID_BLOB_CREATED, "cloudevents": CLOUD_EVENT_BLOB_CREATED}
DELETED = {"event grid": EVENT_GRID_BLOB_DELETED, "cloudevents": CLOUD_EVENT_BLOB_DELETED}


def one(sample: str):
    [event] = parse_event_grid_body(parse_json_bytes(sample))
    return event


@pytest.mark.parametrize("schema", CREATED)
def test_created_action(schema):
    event = one(CREATED[schema])
    assert (event.action, event.event_name) == ("created", "Microsoft.Storage.BlobCreated")


@pytest.mark.parametrize("schema", DELETED)
def test_deleted_action(schema):
    event = one(DELETED[schema])
    assert (event.action, event.event_name) == ("deleted", "Microsoft.Storage.BlobDeleted")


@pytest.mark.parametrize("schema", CREATED)
def test_container_is_the_bucket_from_the_subject(schema):
    assert one(CREATED[schema]).bucket == "test-container"
    assert one(DELETED[schema]).bucket == "testcontainer"


@pytest.mark.parametrize("schema", CREATED)
def test_blob_name_is_the_key_from_the_subject(schema):
    assert one(CREATED[schema]).key == "new-file.txt"
    assert one(DELETED[schema]).key == "file-to-delete.txt"


def test_a_nested_blob_name_with_spaces_is_kept_as_it_is():
    data = json.loads(EVENT_GRID_BLOB_CREATED)
    data[0]["subject"] = "/blobServices/default/containers/c/blobs/resources/api_uploads/r/u/a b+c ü.csv"
    [event] = parse_event_grid_body(data)
    assert (event.bucket, event.key) == ("c", "resources/api_uploads/r/u/a b+c ü.csv")


@pytest.mark.parametrize("schema", CREATED)
def test_size_is_content_length_on_create_and_none_on_delete(schema):
    assert one(CREATED[schema]).size == 524288
    assert one(DELETED[schema]).size is None


@pytest.mark.parametrize("schema", CREATED)
def test_etag_without_quotes(schema):
    # The CloudEvents sample quotes its ETag; the Event Grid one does not: both give the same.
    assert one(CREATED[schema]).etag == "0x8D4BCC2E4835CD0"


@pytest.mark.parametrize("schema", CREATED)
def test_event_time(schema):
    assert one(CREATED[schema]).event_time == datetime(2017, 6, 26, 18, 41, 0, 958410, tzinfo=UTC)


@pytest.mark.parametrize("schema", CREATED)
def test_sequencer(schema):
    assert one(CREATED[schema]).sequencer == "00000000000004420000000000028963"
    assert one(DELETED[schema]).sequencer == "0000000000000281000000000002F5CA"


def test_the_same_event_in_both_schemas_dedupes_to_one_key():
    assert one(EVENT_GRID_BLOB_CREATED).dedupe_key == one(CLOUD_EVENT_BLOB_CREATED).dedupe_key
    assert one(EVENT_GRID_BLOB_CREATED).dedupe_key != one(EVENT_GRID_BLOB_DELETED).dedupe_key


def test_a_single_cloud_event_is_read_as_a_list_of_one():
    [event] = parse_event_grid_body(json.loads(CLOUD_EVENT_BLOB_CREATED)[0])
    assert event.key == "new-file.txt"


def test_a_queue_message_is_base64_of_one_event_as_event_grid_writes_it():
    event = json.loads(EVENT_GRID_BLOB_CREATED)[0]
    content = base64.b64encode(json.dumps(event).encode()).decode()
    [parsed] = parse_azure_queue_message(content)
    assert (parsed.bucket, parsed.key, parsed.size) == ("test-container", "new-file.txt", 524288)
    [plain] = parse_azure_queue_message(json.dumps(event))  # a queue read without base64 decoding
    assert plain.dedupe_key == parsed.dedupe_key


def test_the_validation_event_is_a_handshake_not_an_event():
    handshake = validation_request(parse_json_bytes(SUBSCRIPTION_VALIDATION))
    assert handshake is not None and handshake.validation_code == "512d38b6-c7b8-40c8-89fe-f46f9e9622b6"
    assert validation_request(parse_json_bytes(EVENT_GRID_BLOB_CREATED)) is None


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda e: e.update(eventType="Microsoft.Storage.BlobTierChanged"), "is not one of"),
        (lambda e: e.pop("eventType"), "neither eventType"),
        (lambda e: e.update(subject="/blobServices/default/containers/c"), "containers/<container>/blobs"),
        (lambda e: e.update(subject="/blobServices/default/containers//blobs/x"), "names no container"),
        (lambda e: e.update(subject="/blobServices/default/containers/c/blobs/"), "must not be empty"),
        (lambda e: e.update(subject=7), "must be a string"),
        (lambda e: e.update(data="x"), "data must be a JSON object"),
        (lambda e: e["data"].update(contentLength=-1), "out of range"),
        (lambda e: e["data"].update(contentLength="5"), "whole number"),
        (lambda e: e.update(eventTime="yesterday"), "ISO 8601"),
        (lambda e: e["data"].update(sequencer=["x"]), "must be a string"),
        (lambda e: e.update(subject="/blobServices/default/containers/c/blobs/a\x00b"), "NUL"),
    ],
)
def test_malformed_events_say_what_is_wrong(change, message):
    event = json.loads(EVENT_GRID_BLOB_CREATED)[0]
    change(event)
    with pytest.raises(EventParseError, match=message):
        parse_event_grid_body([event])


def test_a_cloud_event_needs_specversion_1_0():
    event = json.loads(CLOUD_EVENT_BLOB_CREATED)[0]
    event["specversion"] = "0.3"
    with pytest.raises(EventParseError, match="specversion"):
        parse_event_grid_body(event)


@pytest.mark.parametrize("body", ["5", '"x"', "null", "true"])
def test_a_body_that_is_not_an_event_is_refused(body):
    with pytest.raises(EventParseError):
        parse_event_grid_body(parse_json_bytes(body))


def test_a_queue_message_that_is_neither_json_nor_base64_is_refused():
    with pytest.raises(EventParseError, match="neither JSON nor base64"):
        parse_azure_queue_message("%%% not a message")
