"""Issue → PUT → storage event → consumer → a real qcluster → a real CKAN, with nothing faked."""

from __future__ import annotations

import json
import time
import uuid
from datetime import UTC, datetime

import pytest
from django.test import override_settings

from tests.support.cf_queue import FakeCloudflareQueue
from tests.support.pipeline import (
    median,
    pipeline_environ,
    qcluster,
    run_command,
    upload_as_editor,
    wait_for_state,
    world_environ,
)
from tests.support.processes import manage_process
from uploads import storage
from uploads.api_events import signature_for
from uploads.models import EventSource, LinkAttempt, StorageEvent, UploadState

pytestmark = [pytest.mark.integration, pytest.mark.ckan, pytest.mark.django_db(transaction=True)]

CSV = b"station,temp\nA,12.5\nB,13.0\n"
WEBHOOK_SECRET = "e2e-webhook-secret"


def assert_ckan_shows(ckan_world, upload_id: str, data: bytes, *, content_type: str = "text/csv") -> dict:
    """The real CKAN resource points at the object, with its size and format, and kept the rest."""
    upload = wait_for_state(upload_id, UploadState.LINKED)
    resource = ckan_world.site.resource_show(ckan_world.resource["id"])
    assert resource["url"] == storage.public_url(upload.key)
    assert resource["url"] == upload.linked_url
    assert int(resource["size"]) == len(data)
    assert resource["format"] == "CSV"
    assert resource["mimetype"] == content_type
    # The hash is a checksum the store verified, else the single-part MD5 ETag (moto keeps no
    # checksums; R2 and S3 return the signed x-amz-checksum-sha256).
    expected = f"sha256:{upload.verified_sha256}" if upload.verified_sha256 else f"md5:{upload.object_etag}"
    assert resource["hash"] == expected
    assert resource["last_modified"]
    assert resource.get("url_type") in (None, "")
    # resource_patch, not resource_update: what the link did not send is untouched.
    assert resource["description"] == "Original description, must survive patches"
    assert resource["reconciler_note"] == "extra field kept by CKAN"
    assert resource["name"] == ckan_world.resource["name"]
    return resource


def test_an_s3_upload_is_linked_through_sqs_and_a_real_qcluster(
    client, storage_world, ckan_world, ckan_settings, tmp_path
):
    env = world_environ(storage_world, ckan_settings)
    issued = upload_as_editor(client, ckan_world, filename="temps.csv", data=CSV)

    output = run_command("consume_sqs", "--once", "--wait-seconds", "0", env=env)
    assert "consume_sqs" in output
    event = StorageEvent.objects.get(key=issued["key"])
    assert (event.source, event.upload_id) == (EventSource.SQS, uuid.UUID(issued["upload_id"]))

    with qcluster(env, tmp_path / "qcluster.log"):
        assert_ckan_shows(ckan_world, issued["upload_id"], CSV)

    [attempt] = LinkAttempt.objects.filter(upload_id=issued["upload_id"])
    assert (attempt.trigger, attempt.outcome, attempt.ckan_status) == ("event", "linked", 200)
    status = client.get(issued["status_url"]).json()
    assert status["state"] == "linked"


def r2_notification(storage_world, issued: dict, size: int) -> dict:
    """An R2 event notification for the uploaded object, as R2 writes it (raw key, no encoding)."""
    head = storage_world.s3.head_object(Bucket=storage_world.bucket, Key=issued["key"])
    return {
        "account": "3f4b7e3dcab231cbfdaa90a6a28bd548",
        "action": "PutObject",
        "bucket": storage_world.bucket,
        "object": {"key": issued["key"], "size": size, "eTag": head["ETag"].strip('"')},
        "eventTime": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
    }


def post_signed(client, path: str, payload: object):
    body = json.dumps(payload).encode()
    timestamp = str(int(time.time()))
    return client.post(
        path,
        data=body,
        content_type="application/json",
        HTTP_X_SIGNATURE_TIMESTAMP=timestamp,
        HTTP_X_SIGNATURE=signature_for(WEBHOOK_SECRET, timestamp, body),
    )


def test_an_r2_event_pushed_to_the_webhook_is_linked(client, storage_world, ckan_world, ckan_settings, tmp_path):
    env = world_environ(storage_world, ckan_settings)
    issued = upload_as_editor(client, ckan_world, filename="r2 push.csv", data=CSV)

    with qcluster(env, tmp_path / "qcluster.log"), override_settings(EVENTS_WEBHOOK_SECRET=WEBHOOK_SECRET):
        # A Worker batch, as a push consumer would forward it.
        batch = {"messages": [{"id": "m-1", "body": r2_notification(storage_world, issued, len(CSV))}]}
        response = post_signed(client, "/api/v1/events/r2", batch)
        assert response.status_code == 202, response.content
        assert response.json() == {"received": 1, "duplicates": 0, "unmatched": 0}
        assert_ckan_shows(ckan_world, issued["upload_id"], CSV)

    event = StorageEvent.objects.get(key=issued["key"])
    assert event.source == EventSource.WEBHOOK


def test_an_r2_event_pulled_from_a_cloudflare_queue_is_linked(
    client, storage_world, ckan_world, ckan_settings, tmp_path
):
    issued = upload_as_editor(client, ckan_world, filename="r2 pull.csv", data=CSV)
    with FakeCloudflareQueue() as queue:
        env = pipeline_environ(
            storage_world, ckan_url=ckan_settings.url, ckan_token=ckan_settings.sysadmin_token, **queue.environ()
        )
        message_id = queue.send(r2_notification(storage_world, issued, len(CSV)))
        with qcluster(env, tmp_path / "qcluster.log"):
            run_command("consume_r2_queue", "--once", env=env)
            assert queue.acked == [message_id]
            assert queue.backlog == 0
            assert_ckan_shows(ckan_world, issued["upload_id"], CSV)

    event = StorageEvent.objects.get(key=issued["key"])
    assert event.source == EventSource.R2_QUEUE


def test_put_to_linked_latency_through_a_running_consumer_and_qcluster(
    client, storage_world, ckan_world, ckan_settings, tmp_path
):
    """Median time from the PUT returning to the ledger saying linked, over sequential uploads."""
    env = world_environ(storage_world, ckan_settings)
    runs = 7
    latencies_ms: list[float] = []
    with (
        qcluster(env, tmp_path / "qcluster.log"),
        manage_process("consume_sqs", "--wait-seconds", "1", env=env, log_path=tmp_path / "consume.log"),
    ):
        for n in range(runs):
            data = CSV + f"C,{n}\n".encode()
            issued = upload_as_editor(client, ckan_world, filename=f"run-{n}.csv", data=data)
            put_done = datetime.now(UTC)
            upload = wait_for_state(issued["upload_id"], UploadState.LINKED, timeout=60)
            assert upload.linked_at is not None
            latencies_ms.append((upload.linked_at - put_done).total_seconds() * 1000)
        resource = ckan_world.site.resource_show(ckan_world.resource["id"])
        assert resource["url"] == upload.linked_url  # the last one wins
    result = median(latencies_ms)
    # Baseline from the same run: the link step alone (claim, HEAD, resource_patch, commit).
    link_ms = [
        (a.finished_at - a.started_at).total_seconds() * 1000
        for a in LinkAttempt.objects.filter(upload__resource_id=ckan_world.resource["id"], outcome="linked")
    ]
    assert len(link_ms) == runs
    print(
        f"\nPUT -> linked over {runs} sequential uploads: median {result:.0f} ms "
        f"(min {min(latencies_ms):.0f}, max {max(latencies_ms):.0f}); "
        f"all: {', '.join(f'{v:.0f}' for v in latencies_ms)}; "
        f"link step alone: median {median(link_ms):.0f} ms (end to end = {result / median(link_ms):.1f}x)"
    )
    assert all(v > 0 for v in latencies_ms)
