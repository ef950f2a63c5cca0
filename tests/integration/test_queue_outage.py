"""The queue endpoint unreachable for 30 s (a proxy in front of moto's SQS) while objects keep arriving.

The real `consume_sqs` process must ride it out: never exit, show up as degraded in /healthz
during the outage and ok after it, and record every event once the queue answers again.
"""

from __future__ import annotations

import os
import time

import pytest
from django.test import override_settings

from tests.support.factories import make_upload
from tests.support.processes import child_environ, manage_process, wait_for
from tests.support.tcp_proxy import TcpProxy
from uploads.models import ConsumerHealth, EventStatus, StorageEvent, Upload, UploadState

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

OUTAGE_SECONDS = float(os.environ.get("QUEUE_OUTAGE_SECONDS", "30"))  # the 30 s; shorter for a quick look


def put_objects(world, uploads: list[Upload]) -> None:
    for upload in uploads:
        world.s3.put_object(Bucket=world.bucket, Key=upload.key, Body=b"a,b\n1,2\n")


def recorded(uploads: list[Upload]) -> int:
    return StorageEvent.objects.filter(key__in=[u.key for u in uploads], status=EventStatus.MATCHED).count()


def test_the_consumer_survives_an_unreachable_queue_and_loses_no_event(storage_world, client, tmp_path):
    world = storage_world
    proxy = TcpProxy(world.endpoint).start()
    queue_url = world.queue_url.replace(world.endpoint, proxy.url)
    env = child_environ(
        **{
            **world.environ(),
            "SQS_QUEUE_URL": queue_url,
            "AWS_ENDPOINT_URL_SQS": proxy.url,
            "CONSUMER_BACKOFF_MAX_SECONDS": "4",
        }
    )
    log_path = tmp_path / "consumer.log"
    before = [make_upload(bucket=world.bucket) for _ in range(5)]
    during = [make_upload(bucket=world.bucket) for _ in range(int(OUTAGE_SECONDS))]

    def status() -> str:
        response = client.get("/healthz")
        assert response.status_code == 200, response.content  # degraded is never a 503
        return response.json()["status"]

    with (
        override_settings(SQS_QUEUE_URL=queue_url),
        manage_process("consume_sqs", "--wait-seconds", "2", env=env, log_path=log_path) as consumer,
    ):
        put_objects(world, before)
        wait_for(lambda: recorded(before) == len(before), timeout=60, what="the events before the outage")
        wait_for(lambda: status() == "ok", timeout=30, what="/healthz to say ok")

        proxy.stop()
        seen_during: set[str] = set()
        outage_ends = time.monotonic() + OUTAGE_SECONDS
        for upload in during:  # about one object a second, for the whole outage
            put_objects(world, [upload])
            seen_during.add(status())
            assert consumer.poll() is None, log_path.read_text()
            time.sleep(max(0.0, min(1.0, outage_ends - time.monotonic())))
        while time.monotonic() < outage_ends:
            seen_during.add(status())
            time.sleep(0.5)
        assert consumer.poll() is None, log_path.read_text()
        assert "degraded" in seen_during, seen_during
        assert recorded(during) == 0  # nothing reached the consumer while its queue was unreachable
        errors = ConsumerHealth.objects.get(name="sqs").receive_errors_total
        assert errors >= 3

        proxy.start()
        # Messages cut off mid-delivery come back after moto's 30 s visibility timeout.
        wait_for(lambda: recorded(during) == len(during), timeout=120, interval=1, what="every event of the outage")
        wait_for(lambda: status() == "ok", timeout=30, what="/healthz to say ok again")
        assert consumer.poll() is None, log_path.read_text()

    proxy.stop()
    log = log_path.read_text()
    assert "trying again in" in log and "the queue answers again after" in log
    assert proxy.url not in log and "testing-secret-key" not in log
    uploads = Upload.objects.filter(id__in=[u.id for u in before + during])
    assert {u.state for u in uploads} == {UploadState.UPLOADED}
    assert StorageEvent.objects.filter(key__in=[u.key for u in before + during]).values("key").distinct().count() == (
        len(before) + len(during)
    )
