"""consume_azure_queue against a real Azurite Storage Queue: record, commit, then delete."""

from __future__ import annotations

import base64
import json
import logging
import threading

import pytest
import requests
from django.core.management import call_command
from django.db import OperationalError
from django.test import override_settings

from tests.support.factories import make_upload as build_upload
from tests.support.processes import wait_for
from tests.support.tcp_proxy import TcpProxy
from tests.uploads.samples.azure_event_grid import CLOUD_EVENT_BLOB_CREATED, EVENT_GRID_BLOB_CREATED
from uploads import storage
from uploads.consumers.azure_queue import AzureQueueConsumer, make_queue_client
from uploads.consumers.backoff import Backoff
from uploads.models import ConsumerHealth, EventSource, EventStatus, StorageEvent, Upload, UploadState
from uploads.services import ingest

RESOURCE_ID = "3f1b0c8e-2a4d-4c6e-9b1a-0123456789ab"
DATA = b"a,b\n1,2\n"

pytestmark = pytest.mark.django_db(transaction=True)


def consumer(**kwargs) -> AzureQueueConsumer:
    return AzureQueueConsumer(client=make_queue_client(), idle_seconds=0.1, **kwargs)


def make_upload(world, name: str = "my file+ü.csv") -> Upload:
    return build_upload(resource_id=RESOURCE_ID, filename=name, bucket=world.container, raw_key=True)


def put_blob(upload: Upload) -> storage.ObjectInfo:
    signed = storage.presign_put(upload.key, content_type="text/csv", content_length=len(DATA), expires_in=300)
    assert requests.put(signed.url, data=DATA, headers=signed.headers, timeout=10).status_code == 201
    info = storage.head_object(upload.key)
    assert info is not None
    return info


def event_grid_message(world, upload: Upload, info: storage.ObjectInfo, *, cloudevents: bool = False) -> str:
    """What Event Grid writes to a Storage Queue: one event, base64 of its JSON."""
    [event] = json.loads(CLOUD_EVENT_BLOB_CREATED if cloudevents else EVENT_GRID_BLOB_CREATED)
    event["subject"] = f"/blobServices/default/containers/{world.container}/blobs/{upload.key}"
    event["data"].update(contentLength=info.size, eTag=info.etag, api="PutBlob")
    return base64.b64encode(json.dumps(event).encode()).decode("ascii")


def queued(world) -> int:
    return len(list(world.queue_client().peek_messages(max_messages=32)))


@pytest.mark.parametrize("cloudevents", [False, True])
def test_a_blob_created_message_is_recorded_moves_the_upload_and_is_deleted(azure_world, enqueued, cloudevents):
    upload = make_upload(azure_world)
    info = put_blob(upload)
    azure_world.queue_client().send_message(event_grid_message(azure_world, upload, info, cloudevents=cloudevents))

    tally = consumer().run(once=True)
    assert (tally.messages, tally.events, tally.failed, tally.unmatched) == (1, 1, 0, 0)
    event = StorageEvent.objects.get()
    assert (event.source, event.upload_id, event.size) == (EventSource.AZURE_QUEUE, upload.id, len(DATA))
    assert Upload.objects.get(pk=upload.pk).state == UploadState.UPLOADED
    assert enqueued == [(str(upload.id), "event")]
    assert queued(azure_world) == 0


def test_the_same_event_through_the_queue_twice_is_one_row(azure_world, enqueued):
    upload = make_upload(azure_world)
    message = event_grid_message(azure_world, upload, put_blob(upload))
    azure_world.queue_client().send_message(message)
    azure_world.queue_client().send_message(message)
    tally = consumer().run(once=True)
    assert (tally.events, tally.duplicates) == (2, 1)
    assert StorageEvent.objects.get().deliveries == 2
    assert enqueued == [(str(upload.id), "event")]


def test_a_message_that_cannot_be_recorded_is_not_deleted(azure_world, enqueued, monkeypatch):
    upload = make_upload(azure_world)
    azure_world.queue_client().send_message(event_grid_message(azure_world, upload, put_blob(upload)))

    def broken(**kwargs):
        raise OperationalError("database is locked")

    real = ingest.record_batch
    monkeypatch.setattr(ingest, "record_batch", broken)
    tally = consumer(visibility_timeout=1).run(once=True)
    assert tally.failed == 1
    assert not StorageEvent.objects.exists()

    monkeypatch.setattr(ingest, "record_batch", real)
    wait_for(lambda: consumer().run(once=True).events, timeout=10, interval=0.5, what="the redelivery")
    assert StorageEvent.objects.get().upload == upload
    assert queued(azure_world) == 0


def test_an_unreadable_message_is_kept_raw_and_deleted(azure_world):
    azure_world.queue_client().send_message("<xml>not an event</xml>")
    tally = consumer().run(once=True)
    assert (tally.unparseable, tally.failed) == (1, 0)
    kept = StorageEvent.objects.get(status=EventStatus.UNPARSEABLE)
    assert kept.raw_body == "<xml>not an event</xml>"
    assert queued(azure_world) == 0


def test_the_command_drains_with_once(azure_world, enqueued):
    uploads = [make_upload(azure_world, f"file {i}.csv") for i in range(3)]
    for upload in uploads:
        azure_world.queue_client().send_message(event_grid_message(azure_world, upload, put_blob(upload)))
    call_command("consume_azure_queue", "--once", "--idle-seconds", "0.1")
    assert StorageEvent.objects.filter(status=EventStatus.MATCHED).count() == 3
    assert {u.state for u in Upload.objects.all()} == {UploadState.UPLOADED}


def test_it_rides_out_an_unreachable_queue_then_records_what_waited_there(azure_world, caplog):
    proxy = TcpProxy(azure_world.azurite.endpoints["Queue"]).start()
    proxy.stop()  # the queue endpoint refuses connections from the start
    with override_settings(AZURE_QUEUE_ENDPOINT=f"{proxy.url}/devstoreaccount1"):
        loop = consumer(backoff=Backoff(base=0.05, cap=0.2))
    crashed: list[BaseException] = []

    def run() -> None:
        try:
            loop.run()
        except BaseException as exc:
            crashed.append(exc)

    caplog.set_level(logging.WARNING, logger="uploads.consumers")
    thread = threading.Thread(target=run)
    thread.start()
    try:
        wait_for(
            lambda: ConsumerHealth.objects.filter(name="azure-queue", consecutive_errors__gte=2).exists(),
            timeout=60,
            what="two failed receives",
        )
        upload = make_upload(azure_world)
        azure_world.queue_client().send_message(event_grid_message(azure_world, upload, put_blob(upload)))
        proxy.start()
        wait_for(lambda: StorageEvent.objects.filter(key=upload.key).exists(), timeout=30, what="the event")
        wait_for(
            lambda: ConsumerHealth.objects.filter(name="azure-queue", consecutive_errors=0).exists(),
            timeout=10,
            what="the streak to end",
        )
    finally:
        loop.stop()
        thread.join(timeout=20)
        proxy.stop()
    assert not crashed
    assert not thread.is_alive()
    assert any("could not receive from the Azure queue" in r.getMessage() for r in caplog.records)
    assert all("devstoreaccount1" not in r.getMessage() for r in caplog.records if "azure" in r.name)
