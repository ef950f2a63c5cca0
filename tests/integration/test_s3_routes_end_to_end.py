"""S3 → EventBridge → SQS end to end: the documented event in a moto queue, consume_sqs, a real
qcluster, linked in the real local CKAN."""

from __future__ import annotations

import json
import uuid

import pytest

from tests.integration.test_end_to_end import CSV, assert_ckan_shows
from tests.support.pipeline import qcluster, run_command, upload_as_editor, world_environ
from tests.uploads.test_consume_sqs_routes import eventbridge_event
from uploads.models import EventSource, LinkAttempt, StorageEvent

pytestmark = [pytest.mark.integration, pytest.mark.ckan, pytest.mark.django_db(transaction=True)]


def test_an_eventbridge_object_created_message_in_sqs_ends_linked(
    client, storage_world, ckan_world, ckan_settings, tmp_path
):
    env = world_environ(storage_world, ckan_settings)
    issued = upload_as_editor(client, ckan_world, filename="eventbridge temps.csv", data=CSV)
    # The bucket's direct S3 → SQS notification is not this route: only the EventBridge event stays.
    storage_world.sqs.purge_queue(QueueUrl=storage_world.queue_url)
    body = eventbridge_event(storage_world, issued["key"])
    storage_world.sqs.send_message(QueueUrl=storage_world.queue_url, MessageBody=json.dumps(body))

    run_command("consume_sqs", "--once", "--wait-seconds", "0", env=env)
    event = StorageEvent.objects.get(key=issued["key"])
    assert (event.source, event.event_name) == (EventSource.SQS, "Object Created:PutObject")
    assert event.upload_id == uuid.UUID(issued["upload_id"])

    with qcluster(env, tmp_path / "qcluster.log"):
        assert_ckan_shows(ckan_world, issued["upload_id"], CSV)

    # Linked once, by the event (a busy CKAN may have made an earlier attempt retry first).
    attempts = list(LinkAttempt.objects.filter(upload_id=issued["upload_id"]).values_list("trigger", "outcome"))
    assert attempts[0] == ("event", "linked"), attempts
    assert [outcome for _, outcome in attempts].count("linked") == 1, attempts
    assert client.get(issued["status_url"]).json()["state"] == "linked"
