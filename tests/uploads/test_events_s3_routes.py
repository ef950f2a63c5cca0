"""S3's other routes into SQS, parsed from the providers' documented samples.

Samples: "EventBridge event message structure" (docs.aws.amazon.com/AmazonS3/latest/userguide/
ev-events.html), "Event message structure" (.../notification-content-structure.html) and SNS's
"HTTP/HTTPS notification JSON format" (docs.aws.amazon.com/sns/latest/dg/
http-notification-json.html); only the values a test names are changed.
"""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime

import pytest

from uploads.events import EventParseError, parse_eventbridge_event, parse_sns_raw_body, parse_sqs_body
from uploads.events.sqs import sqs_body_shape

# AWS docs, EventBridge "Object created".
EB_CREATED = {
    "version": "0",
    "id": "17793124-05d4-b198-2fde-7ededc63b103",
    "detail-type": "Object Created",
    "source": "aws.s3",
    "account": "111122223333",
    "time": "2021-11-12T00:00:00Z",
    "region": "ca-central-1",
    "resources": ["arn:aws:s3:::amzn-s3-demo-bucket1"],
    "detail": {
        "version": "0",
        "bucket": {"name": "amzn-s3-demo-bucket1"},
        "object": {
            "key": "example-key",
            "size": 5,
            "etag": "b1946ac92492d2347c6235b4d2611184",
            "version-id": "IYV3p45BT0ac8hjHg1houSdS1a.Mro8e",
            "sequencer": "617f08299329d189",
        },
        "request-id": "N4N7GDK58NMKJ12R",
        "requester": "123456789012",
        "source-ip-address": "1.2.3.4",
        "reason": "PutObject",
    },
}

# AWS docs, EventBridge "Object deleted (using DeleteObject)".
EB_DELETED = {
    "version": "0",
    "id": "2ee9cc15-d022-99ea-1fb8-1b1bac4850f9",
    "detail-type": "Object Deleted",
    "source": "aws.s3",
    "account": "111122223333",
    "time": "2021-11-12T00:00:00Z",
    "region": "ca-central-1",
    "resources": ["arn:aws:s3:::amzn-s3-demo-bucket1"],
    "detail": {
        "version": "0",
        "bucket": {"name": "amzn-s3-demo-bucket1"},
        "object": {
            "key": "example-key",
            "etag": "d41d8cd98f00b204e9800998ecf8427e",
            "version-id": "1QW9g1Z99LUNbvaaYVpW9xDlOLU.qxgF",
            "sequencer": "617f0837b476e463",
        },
        "request-id": "0BH729840619AG5K",
        "requester": "123456789012",
        "source-ip-address": "1.2.3.4",
        "reason": "DeleteObject",
        "deletion-type": "Delete Marker Created",
    },
}

# AWS docs, S3 event notification example (the body SNS delivers raw, and S3 → SQS directly).
S3_NOTIFICATION = {
    "Records": [
        {
            "eventVersion": "2.1",
            "eventSource": "aws:s3",
            "awsRegion": "us-west-2",
            "eventTime": "1970-01-01T00:00:00.000Z",
            "eventName": "ObjectCreated:Put",
            "userIdentity": {"principalId": "AIDAJDPLRKLG7UEXAMPLE"},
            "requestParameters": {"sourceIPAddress": "172.16.0.1"},
            "responseElements": {
                "x-amz-request-id": "C3D13FE58DE4C810",
                "x-amz-id-2": "FMyUVURIY8/IgAtTv8xRjskZQpcIZ9KG4V5Wp6S7S/JRWeUWerMUE5JgHvANOjpD",
            },
            "s3": {
                "s3SchemaVersion": "1.0",
                "configurationId": "testConfigRule",
                "bucket": {
                    "name": "amzn-s3-demo-bucket",
                    "ownerIdentity": {"principalId": "A3NL1KOZZKExample"},
                    "arn": "arn:aws:s3:::amzn-s3-demo-bucket",
                },
                "object": {
                    "key": "HappyFace.jpg",
                    "size": 1024,
                    "eTag": "d41d8cd98f00b204e9800998ecf8427e",
                    "versionId": "096fKKXTRTtl3on89fVO.nfljtsv6qko",
                    "sequencer": "0055AED6DCD90281E5",
                },
            },
        }
    ]
}


def sns_envelope(message: dict) -> dict:
    """SNS docs' notification JSON, carrying ``message`` as S3 (or EventBridge) publishes it."""
    return {
        "Type": "Notification",
        "MessageId": "22b80b92-fdea-4c2c-8f9d-bdfb0c7bf324",
        "TopicArn": "arn:aws:sns:us-west-2:123456789012:MyTopic",
        "Subject": "Amazon S3 Notification",
        "Message": json.dumps(message),
        "Timestamp": "2012-05-02T00:54:06.655Z",
        "SignatureVersion": "1",
        "Signature": "EXAMPLEw6JRN",
        "SigningCertURL": "https://sns.us-west-2.amazonaws.com/SimpleNotificationService-f3ecfb7224c7233fe7bb5f59f96de52f.pem",
        "UnsubscribeURL": "https://sns.us-west-2.amazonaws.com/?Action=Unsubscribe",
    }


def eb(**object_fields) -> dict:
    event = copy.deepcopy(EB_CREATED)
    event["detail"]["object"].update(object_fields)
    return event


# --- EventBridge: one test per field the link uses ----------------------------------------


def test_eventbridge_object_created_is_created():
    [event] = parse_eventbridge_event(EB_CREATED)
    assert event.action == "created"
    assert event.event_name == "Object Created:PutObject"


def test_eventbridge_object_deleted_is_deleted_and_has_no_size():
    [event] = parse_eventbridge_event(EB_DELETED)
    assert (event.action, event.event_name, event.size) == ("deleted", "Object Deleted:DeleteObject", None)


def test_eventbridge_bucket_is_detail_bucket_name():
    [event] = parse_eventbridge_event(EB_CREATED)
    assert event.bucket == "amzn-s3-demo-bucket1"


def test_eventbridge_key_is_decoded_like_an_s3_notification_key():
    [plain] = parse_eventbridge_event(EB_CREATED)
    assert plain.key == "example-key"
    [encoded] = parse_eventbridge_event(eb(key="incoming%2Fmy+file%2B%C3%BC+%E6%97%A5%E6%9C%AC.csv"))
    assert encoded.key == "incoming/my file+ü 日本.csv"


def test_eventbridge_size_is_detail_object_size():
    [event] = parse_eventbridge_event(EB_CREATED)
    assert event.size == 5


def test_eventbridge_etag_is_detail_object_etag():
    [event] = parse_eventbridge_event(EB_CREATED)
    assert event.etag == "b1946ac92492d2347c6235b4d2611184"


def test_eventbridge_event_time_is_the_envelope_time():
    [event] = parse_eventbridge_event(EB_CREATED)
    assert event.event_time == datetime(2021, 11, 12, tzinfo=UTC)


def test_eventbridge_sequencer_is_detail_object_sequencer():
    [event] = parse_eventbridge_event(EB_CREATED)
    assert event.sequencer == "617f08299329d189"
    assert event.payload["id"] == "17793124-05d4-b198-2fde-7ededc63b103"


def test_eventbridge_same_event_twice_has_the_same_dedupe_key_and_another_object_not():
    [a] = parse_eventbridge_event(EB_CREATED)
    [b] = parse_eventbridge_event(copy.deepcopy(EB_CREATED))
    [c] = parse_eventbridge_event(eb(key="other-key"))
    assert a.dedupe_key == b.dedupe_key != c.dedupe_key


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"source": "aws.ec2"}, "comes from 'aws.ec2', not 'aws.s3'"),
        ({"detail-type": "Object Restore Completed"}, "neither 'Object Created' nor 'Object Deleted'"),
        ({"detail": "x"}, "detail must be a JSON object"),
        ({"time": "yesterday"}, "time is not an ISO 8601 time"),
    ],
)
def test_eventbridge_refuses_what_is_not_an_s3_object_event(change, message):
    event = {**copy.deepcopy(EB_CREATED), **change}
    with pytest.raises(EventParseError, match=message):
        parse_eventbridge_event(event)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"key": ""}, "detail.object.key must not be empty"),
        ({"key": "%FF"}, "not URL-encoded UTF-8"),
        ({"size": -1}, "detail.object.size is out of range"),
        ({"etag": 5}, "detail.object.etag must be a string"),
    ],
)
def test_eventbridge_refuses_bad_object_fields(fields, message):
    with pytest.raises(EventParseError, match=message):
        parse_eventbridge_event(eb(**fields))


# --- SNS raw message delivery ----------------------------------------------------------------


def test_sns_raw_delivery_body_is_the_s3_notification_itself():
    [event] = parse_sns_raw_body(S3_NOTIFICATION)
    assert (event.action, event.event_name) == ("created", "ObjectCreated:Put")
    assert (event.bucket, event.key, event.size) == ("amzn-s3-demo-bucket", "HappyFace.jpg", 1024)
    assert event.etag == "d41d8cd98f00b204e9800998ecf8427e"
    assert event.event_time == datetime(1970, 1, 1, tzinfo=UTC)
    assert event.sequencer == "0055AED6DCD90281E5"


def test_sns_raw_refuses_an_envelope():
    with pytest.raises(EventParseError, match="raw message delivery is off"):
        parse_sns_raw_body(sns_envelope(S3_NOTIFICATION))


# --- per-message recognition in the SQS consumer's parser ------------------------------------


@pytest.mark.parametrize(
    ("body", "shape"),
    [
        (S3_NOTIFICATION, "s3"),
        (sns_envelope(S3_NOTIFICATION), "sns"),
        (EB_CREATED, "eventbridge"),
        ({"Service": "Amazon S3", "Event": "s3:TestEvent", "Time": "x", "Bucket": "b"}, "s3-test-event"),
    ],
)
def test_each_route_is_recognised_by_its_shape(body, shape):
    assert sqs_body_shape(body) == shape


def test_every_route_ends_in_the_same_event_for_the_same_object():
    """Direct / raw SNS, SNS envelope, and EventBridge give the fields the link uses alike."""
    notification = copy.deepcopy(S3_NOTIFICATION)
    record = notification["Records"][0]
    record["s3"]["bucket"]["name"] = "amzn-s3-demo-bucket1"
    record["s3"]["object"].update(key="example-key", size=5, eTag="b1946ac92492d2347c6235b4d2611184")
    bodies = [notification, sns_envelope(notification), EB_CREATED, sns_envelope(EB_CREATED)]
    seen = set()
    for body in bodies:
        [event] = parse_sqs_body(json.dumps(body))
        seen.add((event.action, event.bucket, event.key, event.size, event.etag))
    assert seen == {("created", "amzn-s3-demo-bucket1", "example-key", 5, "b1946ac92492d2347c6235b4d2611184")}


def test_the_s3_test_event_gives_no_events_on_every_route():
    test_event = {"Service": "Amazon S3", "Event": "s3:TestEvent", "Time": "x", "Bucket": "b"}
    assert parse_sqs_body(json.dumps(test_event)) == []
    assert parse_sqs_body(json.dumps(sns_envelope(test_event))) == []


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b'{"hello": 1}', "none of: an S3 notification"),
        (b"[1]", "must be a JSON object"),
        (b"not json", "not JSON"),
        (json.dumps(sns_envelope(sns_envelope(S3_NOTIFICATION))).encode(), "another SNS envelope"),
        (json.dumps({"Type": "Notification", "Message": 3}).encode(), "Message must be a string"),
    ],
)
def test_an_unknown_or_broken_body_is_refused_with_the_reason(body, message):
    with pytest.raises(EventParseError, match=message):
        parse_sqs_body(body)
