from __future__ import annotations

import threading
import time

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import OperationalError
from django.test import override_settings

from tests.support.cf_queue import FakeCloudflareQueue
from tests.support.factories import make_upload as build_upload
from tests.support.processes import wait_for
from tests.support.tcp_proxy import TcpProxy
from uploads.consumers.backoff import Backoff
from uploads.consumers.r2_queue import CloudflareQueueClient, CloudflareQueueError, QueueConfig, R2QueueConsumer
from uploads.models import ConsumerHealth, EventStatus, StorageEvent, Upload, UploadState
from uploads.services import ingest

BUCKET = "ckan-uploads"
RESOURCE_ID = "3f1b0c8e-2a4d-4c6e-9b1a-0123456789ab"

pytestmark = pytest.mark.django_db(transaction=True)


class Killed(BaseException):
    """The consumer process dying (not an error it could handle)."""


@pytest.fixture
def queue():
    with FakeCloudflareQueue() as fake:
        yield fake


def consumer_for(queue: FakeCloudflareQueue, **kwargs) -> R2QueueConsumer:
    client = CloudflareQueueClient(
        QueueConfig(
            api_base_url=queue.base_url, account_id=queue.account_id, queue_id=queue.queue_id, api_token=queue.token
        )
    )
    kwargs.setdefault("idle_seconds", 0.05)
    return R2QueueConsumer(client=client, **kwargs)


def make_upload(filename: str = "my file.csv") -> Upload:
    return build_upload(resource_id=RESOURCE_ID, filename=filename, bucket=BUCKET, raw_key=True)


def notification(key: str, action: str = "PutObject", etag: str = "c846ff7a18f28c2e262116d6e8719ef0") -> dict:
    return {
        "account": "3f4b7e3dcab231cbfdaa90a6a28bd548",
        "action": action,
        "bucket": BUCKET,
        "object": {"key": key, "size": 65536, "eTag": etag},
        "eventTime": "2026-05-24T19:36:44.379Z",
    }


def test_it_records_pulled_events_then_acks_them(queue, enqueued):
    upload = make_upload("a file with spaces.csv")
    queue.send(notification(upload.key))
    queue.send(notification("not/ours.csv"), encoding="base64")

    tally = consumer_for(queue).run(once=True)

    assert (tally.events, tally.unmatched, tally.failed) == (2, 1, 0)
    assert queue.backlog == 0 and len(queue.acked) == 2
    matched = StorageEvent.objects.get(status=EventStatus.MATCHED)
    assert (matched.source, matched.key, matched.upload_id) == ("r2-queue", upload.key, upload.id)
    upload.refresh_from_db()
    assert upload.state == UploadState.UPLOADED
    assert enqueued == [(str(upload.id), "event")]


def test_a_consumer_killed_after_recording_but_before_acking_counts_the_redelivery_as_a_duplicate(
    queue, enqueued, monkeypatch
):
    upload = make_upload()
    message_id = queue.send(notification(upload.key))
    dying = consumer_for(queue, visibility_timeout_ms=300)

    def die(**kwargs):
        raise Killed

    monkeypatch.setattr(dying.client, "ack", die)
    with pytest.raises(Killed):
        dying.poll_once()
    assert StorageEvent.objects.get().deliveries == 1
    assert queue.backlog == 1  # never acked

    time.sleep(0.4)  # the lease runs out; the queue redelivers
    tally = consumer_for(queue).run(once=True)

    assert queue.attempts(message_id) == -1 and queue.acked == [message_id]
    assert (tally.events, tally.duplicates) == (1, 1)
    event = StorageEvent.objects.get()
    assert event.deliveries == 2
    upload.refresh_from_db()
    assert upload.state == UploadState.UPLOADED
    assert enqueued == [(str(upload.id), "event")]  # one transition, one link


def test_a_message_that_cannot_be_recorded_is_retried_then_recorded(queue, enqueued, monkeypatch):
    upload = make_upload()
    message_id = queue.send(notification(upload.key))
    real = ingest.record_batch
    calls = {"n": 0}

    def flaky(**kwargs):
        calls["n"] += 1
        if calls["n"] == 1:
            raise OperationalError("database is locked")
        return real(**kwargs)

    monkeypatch.setattr(ingest, "record_batch", flaky)
    consumer = consumer_for(queue, retry_delay_seconds=0)
    first = consumer.poll_once()
    assert (first.failed, queue.retried, queue.acked) == (1, [message_id], [])
    assert not StorageEvent.objects.exists()

    second = consumer.run(once=True)
    assert (second.events, second.failed) == (1, 0)
    assert queue.acked == [message_id]
    assert StorageEvent.objects.get().deliveries == 1
    first_ack = next(body for action, body in queue.requests if action == "ack")
    assert first_ack["acks"] == [] and [r["delay_seconds"] for r in first_ack["retries"]] == [0]


def test_an_unparseable_message_is_kept_raw_and_acked(queue):
    message_id = queue.send("this is not an event", encoding="raw")
    tally = consumer_for(queue).run(once=True)
    assert (tally.unparseable, tally.failed) == (1, 0)
    assert queue.acked == [message_id]
    kept = StorageEvent.objects.get()
    assert (kept.status, kept.action, kept.raw_body) == ("unparseable", "unknown", "this is not an event")
    assert "neither JSON nor base64" in kept.parse_error


def test_a_wrong_token_is_a_clear_error_without_the_token(queue):
    client = CloudflareQueueClient(
        QueueConfig(
            api_base_url=queue.base_url,
            account_id=queue.account_id,
            queue_id=queue.queue_id,
            api_token="nope-wrong-token",
        )
    )
    with pytest.raises(CloudflareQueueError, match="401") as caught:
        R2QueueConsumer(client=client).run(once=True)
    assert "nope-wrong-token" not in str(caught.value)


def test_the_command_drains_and_exits(queue, enqueued):
    upload = make_upload()
    queue.send(notification(upload.key))
    queue.send(notification(upload.key))  # the same event delivered twice
    with override_settings(**queue.settings()):
        call_command("consume_r2_queue", "--once")
    assert queue.backlog == 0
    assert StorageEvent.objects.get().deliveries == 2


def test_the_command_refuses_to_start_without_configuration():
    with (
        override_settings(CF_ACCOUNT_ID="", CF_QUEUE_ID="", CF_API_TOKEN=""),
        pytest.raises(CommandError, match="CF_ACCOUNT_ID"),
    ):
        call_command("consume_r2_queue", "--once")


def test_it_rides_out_an_unreachable_queues_api_with_backoff_then_records_what_waited(queue):
    proxy = TcpProxy(queue.base_url).start()
    proxy.stop()
    client = CloudflareQueueClient(
        QueueConfig(
            api_base_url=f"{proxy.url}/client/v4",
            account_id=queue.account_id,
            queue_id=queue.queue_id,
            api_token=queue.token,
        )
    )
    loop = R2QueueConsumer(client=client, idle_seconds=0.05, backoff=Backoff(base=0.05, cap=0.2))
    thread = threading.Thread(target=loop.run)
    thread.start()
    try:
        wait_for(
            lambda: ConsumerHealth.objects.filter(name="r2-queue", consecutive_errors__gte=3).exists(),
            timeout=30,
            what="three failed pulls",
        )
        upload = make_upload()
        queue.send(notification(upload.key))
        proxy.start()
        wait_for(lambda: StorageEvent.objects.filter(key=upload.key).exists(), timeout=30, what="the event")
        wait_for(lambda: queue.backlog == 0, timeout=10, what="the ack")
    finally:
        loop.stop()
        thread.join(timeout=10)
        proxy.stop()
    assert not thread.is_alive()
    row = ConsumerHealth.objects.get(name="r2-queue")
    assert row.consecutive_errors == 0 and row.receive_errors_total >= 3
    assert row.last_error == "could not reach the Queues API (pull): ConnectionError"
    assert queue.token not in row.last_error
