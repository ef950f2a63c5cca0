"""The SQS consumer reads each S3 route's message shape, on moto over HTTP.

SNS is driven for real (S3 → SNS topic → SQS subscription, raw delivery on and off). For
EventBridge the message is the documented ``Object Created`` event for the real object, sent into
the queue as an EventBridge rule target would; moto's own S3 → EventBridge path writes ``time`` as
a Unix number and ``eTag`` where AWS writes an ISO time and ``etag``, so it is not what AWS sends.
"""

from __future__ import annotations

import copy
import json
from urllib.parse import quote_plus

import boto3
import pytest

from tests.support.moto import ACCESS_KEY, SECRET_KEY, StorageWorld
from tests.uploads.test_consume_sqs import consumer, make_upload, put_through_presigned_url

# The sqs_env fixture, shared with the direct-route tests.
from tests.uploads.test_consume_sqs import sqs_env as sqs_env
from tests.uploads.test_events_s3_routes import EB_CREATED, EB_DELETED
from uploads.models import EventStatus, StorageEvent, UploadState

pytestmark = pytest.mark.django_db(transaction=True)


def eventbridge_event(world: StorageWorld, key: str, template: dict = EB_CREATED) -> dict:
    """The documented EventBridge event for one real object (values from its HEAD)."""
    event = copy.deepcopy(template)
    event["resources"] = [f"arn:aws:s3:::{world.bucket}"]
    event["detail"]["bucket"]["name"] = world.bucket
    event["detail"]["object"]["key"] = quote_plus(key, safe="/")
    if "size" in event["detail"]["object"]:
        head = world.s3.head_object(Bucket=world.bucket, Key=key)
        event["detail"]["object"].update(size=head["ContentLength"], etag=head["ETag"].strip('"'))
    return event


def queue_backlog(world: StorageWorld) -> int:
    attributes = world.sqs.get_queue_attributes(
        QueueUrl=world.queue_url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return int(attributes["ApproximateNumberOfMessages"]) + int(attributes["ApproximateNumberOfMessagesNotVisible"])


def route_through_sns(world: StorageWorld, *, raw: bool) -> None:
    """Replace the bucket's direct queue rule by S3 → SNS topic → the queue."""
    sns = boto3.client(
        "sns",
        endpoint_url=world.endpoint,
        region_name="us-east-1",
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
    )
    topic_arn = sns.create_topic(Name="ckan-upload-events")["TopicArn"]
    queue_arn = world.sqs.get_queue_attributes(QueueUrl=world.queue_url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    sns.subscribe(
        TopicArn=topic_arn,
        Protocol="sqs",
        Endpoint=queue_arn,
        Attributes={"RawMessageDelivery": "true" if raw else "false"},
    )
    world.s3.put_bucket_notification_configuration(
        Bucket=world.bucket,
        NotificationConfiguration={
            "TopicConfigurations": [
                {"Id": "via-sns", "TopicArn": topic_arn, "Events": ["s3:ObjectCreated:*", "s3:ObjectRemoved:*"]}
            ]
        },
    )
    # Drop S3's test event and anything the direct rule sent before.
    world.sqs.purge_queue(QueueUrl=world.queue_url)


def test_an_eventbridge_object_created_message_moves_its_upload(sqs_env, enqueued):
    upload = make_upload(sqs_env)
    put_through_presigned_url(upload)
    sqs_env.sqs.purge_queue(QueueUrl=sqs_env.queue_url)  # the direct S3 notification: not this route
    sqs_env.sqs.send_message(QueueUrl=sqs_env.queue_url, MessageBody=json.dumps(eventbridge_event(sqs_env, upload.key)))

    tally = consumer(sqs_env).run(once=True)

    assert (tally.events, tally.unparseable, tally.failed) == (1, 0, 0)
    event = StorageEvent.objects.get()
    assert (event.source, event.status, event.action, event.key) == ("sqs", EventStatus.MATCHED, "created", upload.key)
    assert (event.size, event.etag, event.event_name) == (
        8,
        "e5ebd4c02cefbe7955977c67ada242b7",
        "Object Created:PutObject",
    )
    upload.refresh_from_db()
    assert (upload.state, upload.object_size) == (UploadState.UPLOADED, 8)
    assert enqueued == [(str(upload.id), "event")]
    assert queue_backlog(sqs_env) == 0


def test_an_eventbridge_object_deleted_message_flags_its_upload(sqs_env, enqueued):
    upload = make_upload(sqs_env)
    put_through_presigned_url(upload)
    sqs_env.sqs.purge_queue(QueueUrl=sqs_env.queue_url)
    for template in (EB_CREATED, EB_DELETED):
        body = eventbridge_event(sqs_env, upload.key, template)
        sqs_env.sqs.send_message(QueueUrl=sqs_env.queue_url, MessageBody=json.dumps(body))

    consumer(sqs_env).run(once=True)

    assert sorted(StorageEvent.objects.values_list("action", flat=True)) == ["created", "deleted"]
    upload.refresh_from_db()
    assert upload.object_deleted_at is not None


@pytest.mark.parametrize("raw", [True, False], ids=["raw-delivery", "sns-envelope"])
def test_a_real_put_through_sns_is_recorded_with_raw_delivery_on_or_off(sqs_env, enqueued, raw):
    route_through_sns(sqs_env, raw=raw)
    upload = make_upload(sqs_env)
    put_through_presigned_url(upload)
    [message] = sqs_env.sqs.receive_message(QueueUrl=sqs_env.queue_url, VisibilityTimeout=0)["Messages"]
    assert ("Records" in json.loads(message["Body"])) is raw  # the route really is the one named

    tally = consumer(sqs_env).run(once=True)

    assert (tally.events, tally.unparseable, tally.failed) == (1, 0, 0)
    event = StorageEvent.objects.get()
    assert (event.status, event.key, event.size) == (EventStatus.MATCHED, upload.key, 8)
    upload.refresh_from_db()
    assert upload.state == UploadState.UPLOADED
    assert queue_backlog(sqs_env) == 0


def test_an_eventbridge_event_of_another_kind_is_kept_as_unparseable_and_deleted(sqs_env):
    sqs_env.sqs.purge_queue(QueueUrl=sqs_env.queue_url)
    restore = {**copy.deepcopy(EB_CREATED), "detail-type": "Object Restore Completed"}
    sqs_env.sqs.send_message(QueueUrl=sqs_env.queue_url, MessageBody=json.dumps(restore))

    tally = consumer(sqs_env).run(once=True)

    assert (tally.messages, tally.unparseable, tally.events) == (1, 1, 0)
    event = StorageEvent.objects.get()
    assert event.status == EventStatus.UNPARSEABLE
    assert "Object Restore Completed" in event.parse_error
    assert queue_backlog(sqs_env) == 0
