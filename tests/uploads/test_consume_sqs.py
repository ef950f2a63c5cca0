from __future__ import annotations

import logging
import threading

import pytest
import requests
from django.core.management import call_command
from django.db import OperationalError
from django.test import override_settings
from django_q.models import OrmQ

from tests.support.factories import make_upload as build_upload
from tests.support.processes import child_environ, manage_process, wait_for
from tests.support.tcp_proxy import TcpProxy
from uploads import storage
from uploads.consumers.backoff import Backoff
from uploads.consumers.sqs import SqsConsumer, make_sqs_client
from uploads.models import ConsumerHealth, EventStatus, StorageEvent, Upload, UploadState
from uploads.services import ingest

RESOURCE_ID = "3f1b0c8e-2a4d-4c6e-9b1a-0123456789ab"

pytestmark = pytest.mark.django_db(transaction=True)


class Killed(BaseException):
    """The consumer process dying (not an error it could handle)."""


@pytest.fixture
def sqs_env(storage_world, monkeypatch):
    """boto3's standard variables pointing at moto, as the command would see them."""
    for name, value in storage_world.environ().items():
        if name.startswith("AWS_"):
            monkeypatch.setenv(name, value)
    with override_settings(SQS_QUEUE_URL=storage_world.queue_url):
        yield storage_world


def consumer(world) -> SqsConsumer:
    return SqsConsumer(client=make_sqs_client(wait_seconds=1), queue_url=world.queue_url, wait_seconds=1)


def make_upload(world, name: str = "my file+ü 日本.csv") -> Upload:
    # Not the sanitised layout on purpose: spaces, "+" and unicode must survive S3's encoding.
    return build_upload(resource_id=RESOURCE_ID, filename=name, bucket=world.bucket, raw_key=True)


def put_through_presigned_url(upload: Upload, data: bytes = b"a,b\n1,2\n") -> None:
    signed = storage.presign_put(upload.key, content_type="text/csv", content_length=len(data), expires_in=300)
    response = requests.put(signed.url, data=data, headers=signed.headers, timeout=10)
    assert response.status_code == 200


def test_a_real_put_is_recorded_the_upload_moves_and_a_link_task_is_queued(sqs_env):
    upload = make_upload(sqs_env)
    put_through_presigned_url(upload)

    tally = consumer(sqs_env).run(once=True)

    assert (tally.events, tally.failed, tally.unparseable) == (1, 0, 0)
    event = StorageEvent.objects.get(action="created")
    assert (event.source, event.status, event.key, event.size) == ("sqs", EventStatus.MATCHED, upload.key, 8)
    assert event.etag == "e5ebd4c02cefbe7955977c67ada242b7"
    upload.refresh_from_db()
    assert (upload.state, upload.object_size) == (UploadState.UPLOADED, 8)
    [task] = [q.task for q in OrmQ.objects.all()]
    assert (task["func"], task["args"][:2]) == ("uploads.tasks.link_upload_task", (str(upload.id), "event"))
    assert sqs_env.sqs.receive_message(QueueUrl=sqs_env.queue_url, WaitTimeSeconds=0).get("Messages") is None


def test_a_deleted_object_flags_its_upload(sqs_env, enqueued):
    upload = make_upload(sqs_env)
    put_through_presigned_url(upload)
    sqs_env.s3.delete_object(Bucket=sqs_env.bucket, Key=upload.key)
    consumer(sqs_env).run(once=True)
    assert set(StorageEvent.objects.values_list("action", flat=True)) == {"created", "deleted"}
    upload.refresh_from_db()
    assert upload.object_deleted_at is not None


def test_a_consumer_killed_after_recording_but_before_deleting_counts_the_redelivery_as_a_duplicate(
    sqs_env, enqueued, monkeypatch
):
    sqs_env.sqs.set_queue_attributes(QueueUrl=sqs_env.queue_url, Attributes={"VisibilityTimeout": "1"})
    upload = make_upload(sqs_env)
    put_through_presigned_url(upload)
    dying = consumer(sqs_env)

    def die(messages):
        raise Killed

    monkeypatch.setattr(dying, "delete", die)
    with pytest.raises(Killed):
        dying.poll_once(0)
    assert StorageEvent.objects.get(action="created").deliveries == 1

    def redelivered():
        return consumer(sqs_env).run(once=True).duplicates

    assert wait_for(redelivered, timeout=10, interval=0.5, what="the redelivery") == 1
    assert StorageEvent.objects.get(action="created").deliveries == 2
    assert enqueued == [(str(upload.id), "event")]  # one transition, one link
    assert consumer(sqs_env).run(once=True).messages == 0  # deleted this time


def test_a_message_that_cannot_be_recorded_is_not_deleted(sqs_env, enqueued, monkeypatch):
    sqs_env.sqs.set_queue_attributes(QueueUrl=sqs_env.queue_url, Attributes={"VisibilityTimeout": "1"})
    upload = make_upload(sqs_env)
    put_through_presigned_url(upload)

    def broken(**kwargs):
        raise OperationalError("database is locked")

    real = ingest.record_batch
    monkeypatch.setattr(ingest, "record_batch", broken)
    tally = consumer(sqs_env).run(once=True)
    assert tally.failed == 1
    assert not StorageEvent.objects.filter(action="created").exists()

    monkeypatch.setattr(ingest, "record_batch", real)
    wait_for(lambda: consumer(sqs_env).run(once=True).events, timeout=10, interval=0.5, what="the redelivery")
    assert StorageEvent.objects.get(action="created").upload == upload


def test_an_unreadable_message_is_kept_raw_and_deleted(sqs_env):
    sqs_env.sqs.send_message(QueueUrl=sqs_env.queue_url, MessageBody="<xml>not json</xml>")
    tally = consumer(sqs_env).run(once=True)
    assert (tally.unparseable, tally.failed) == (1, 0)
    kept = StorageEvent.objects.get(status=EventStatus.UNPARSEABLE)
    assert kept.raw_body == "<xml>not json</xml>"
    assert "not JSON" in kept.parse_error
    assert consumer(sqs_env).run(once=True).messages == 0


def test_the_command_drains_with_once(sqs_env, enqueued):
    uploads = [make_upload(sqs_env, f"file {i}.csv") for i in range(3)]
    for upload in uploads:
        put_through_presigned_url(upload)
    call_command("consume_sqs", "--once")
    assert StorageEvent.objects.filter(status=EventStatus.MATCHED).count() == 3
    assert {u.state for u in Upload.objects.all()} == {UploadState.UPLOADED}


def test_the_command_runs_as_a_process_and_stops_gracefully_on_sigterm(sqs_env, tmp_path):
    upload = make_upload(sqs_env)
    env = child_environ(**sqs_env.environ())
    with manage_process("consume_sqs", "--wait-seconds", "2", env=env, log_path=tmp_path / "consumer.log") as proc:
        put_through_presigned_url(upload)
        wait_for(
            lambda: StorageEvent.objects.filter(key=upload.key).exists(), timeout=20, what="the consumer to record"
        )
        assert proc.poll() is None
    assert proc.returncode == 0, (tmp_path / "consumer.log").read_text()
    upload.refresh_from_db()
    assert upload.state == UploadState.UPLOADED


def test_it_rides_out_an_unreachable_queue_then_records_what_waited_there(sqs_env, monkeypatch, caplog):
    proxy = TcpProxy(sqs_env.endpoint).start()
    proxy.stop()  # the queue endpoint refuses connections from the start
    monkeypatch.setenv("AWS_ENDPOINT_URL_SQS", proxy.url)
    queue_url = sqs_env.queue_url.replace(sqs_env.endpoint, proxy.url)
    loop = SqsConsumer(
        client=make_sqs_client(wait_seconds=1),
        queue_url=queue_url,
        wait_seconds=1,
        backoff=Backoff(base=0.05, cap=0.2),
    )
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
            lambda: ConsumerHealth.objects.filter(name="sqs", consecutive_errors__gte=3).exists(),
            timeout=30,
            what="three failed receives",
        )
        upload = make_upload(sqs_env)
        put_through_presigned_url(upload)
        proxy.start()
        wait_for(lambda: StorageEvent.objects.filter(key=upload.key).exists(), timeout=30, what="the event")
        wait_for(
            lambda: ConsumerHealth.objects.filter(name="sqs", consecutive_errors=0).exists(),
            timeout=10,
            what="the streak to end",
        )
    finally:
        loop.stop()
        thread.join(timeout=10)
        proxy.stop()
    assert not thread.is_alive() and crashed == []
    row = ConsumerHealth.objects.get(name="sqs")
    assert row.receive_errors_total >= 3 and row.last_ok_at > row.last_error_at
    assert row.last_error == "could not receive from SQS: EndpointConnectionError"
    warnings = [r.getMessage() for r in caplog.records if "trying again in" in r.getMessage()]
    assert len(warnings) >= 3
    assert not any(proxy.url in line or "testing-secret-key" in line for line in warnings)
