"""Multipart uploads and an honest ``complete`` on real parts: moto over HTTP, the real CKAN, qcluster."""

from __future__ import annotations

import json
import time

import pytest
import requests
from django.test import override_settings

from tests.support.pipeline import qcluster, run_command, wait_for_state, world_environ
from uploads import storage
from uploads.models import LinkAttempt, StorageEvent, Upload, UploadState

pytestmark = [pytest.mark.integration, pytest.mark.ckan, pytest.mark.django_db(transaction=True)]

MIB = 1024**2


def ask(client, token: str, resource_id: str, *, size: int, multipart: bool | None, filename: str) -> dict:
    body = {"resource_id": resource_id, "filename": filename, "content_type": "text/csv", "size": size}
    if multipart is not None:
        body["multipart"] = multipart
    response = client.post(
        "/api/v1/uploads", data=json.dumps(body), content_type="application/json", HTTP_AUTHORIZATION=token
    )
    assert response.status_code == 201, response.content
    return response.json()


def csv_bytes(size: int) -> bytes:
    line = b"station,temp,when\nA,12.5,2026-12-03T10:00:00Z\n"
    return (line * (size // len(line) + 1))[:size]


def test_a_file_of_several_parts_is_uploaded_completed_evented_and_linked(
    client, storage_world, ckan_world, ckan_settings, tmp_path
):
    data = csv_bytes(12 * MIB + 12345)
    with override_settings(MULTIPART_PART_SIZE=5 * MIB):
        issued = ask(
            client,
            ckan_world.editor.token,
            ckan_world.resource["id"],
            size=len(data),
            multipart=True,
            filename="big.csv",
        )
    assert (issued["part_size"], issued["part_count"]) == (5 * MIB, 3)
    etags = []
    for part in issued["parts"]:
        start = (part["part_number"] - 1) * issued["part_size"]
        chunk = data[start : start + issued["part_size"]]
        put = requests.put(part["url"], data=chunk, headers=part["headers"], timeout=60)
        assert put.status_code == 200, put.text
        etags.append({"part_number": part["part_number"], "etag": put.headers["ETag"]})
    done = client.post(
        issued["complete_url"],
        data=json.dumps({"parts": etags}),
        content_type="application/json",
        HTTP_AUTHORIZATION=ckan_world.editor.token,
    )
    assert done.status_code == 202, done.content

    env = world_environ(storage_world, ckan_settings)
    run_command("consume_sqs", "--once", "--wait-seconds", "0", env=env)
    events = set(StorageEvent.objects.filter(key=issued["key"]).values_list("event_name", flat=True))
    assert "ObjectCreated:CompleteMultipartUpload" in events

    with qcluster(env, tmp_path / "qcluster.log"):
        upload = wait_for_state(issued["upload_id"], UploadState.LINKED)
    resource = ckan_world.site.resource_show(ckan_world.resource["id"])
    assert resource["url"] == storage.public_url(upload.key) == upload.linked_url
    assert int(resource["size"]) == len(data)
    assert resource["format"] == "CSV"
    # The multipart ETag is not an MD5 of the file, and no SHA-256 was verified: no hash is claimed.
    assert not resource.get("hash")
    assert resource["description"] == "Original description, must survive patches"
    stored = storage_world.s3.get_object(Bucket=storage_world.bucket, Key=issued["key"])["Body"].read()
    assert stored == data
    assert upload.part_count == 3 and upload.object_etag.endswith("-3")


def test_complete_before_the_put_is_409_and_after_it_links_within_5_s_without_any_event(
    client, storage_world, ckan_world, ckan_settings, tmp_path
):
    data = csv_bytes(4096)
    issued = ask(
        client, ckan_world.editor.token, ckan_world.resource["id"], size=len(data), multipart=None, filename="t.csv"
    )
    early = client.post(issued["complete_url"], HTTP_AUTHORIZATION=ckan_world.editor.token)
    assert (early.status_code, early.json()["error"]["code"]) == (409, "not_uploaded")
    assert Upload.objects.get(pk=issued["upload_id"]).state == UploadState.ISSUED
    assert not StorageEvent.objects.exists()

    # No consumer runs and the bucket's queue is never read: only `complete` says the object is there.
    env = world_environ(storage_world, ckan_settings, SQS_QUEUE_URL="")
    with qcluster(env, tmp_path / "qcluster.log"):
        time.sleep(2)  # the cluster is up and polling
        requests.put(issued["upload_url"], data=data, headers=issued["headers"], timeout=30).raise_for_status()
        started = time.monotonic()
        late = client.post(issued["complete_url"], HTTP_AUTHORIZATION=ckan_world.editor.token)
        assert late.status_code == 202, late.content
        wait_for_state(issued["upload_id"], UploadState.LINKED, timeout=5)
        took = time.monotonic() - started
    assert took < 5
    [attempt] = LinkAttempt.objects.filter(upload_id=issued["upload_id"])
    assert (attempt.trigger, attempt.outcome) == ("complete", "linked")
    again = client.post(issued["complete_url"], HTTP_AUTHORIZATION=ckan_world.editor.token)
    assert (again.status_code, again.json()["state"]) == (202, "linked")


def test_another_ckan_users_token_cannot_get_part_urls_complete_or_abort(
    client, storage_world, ckan_world, ckan_settings
):
    # A second editor of the same organisation may update the resource, but did not start this upload.
    colleague = ckan_world.site.create_user("colleague")
    ckan_world.site.add_member(ckan_world.org["id"], colleague.name, "editor")
    with override_settings(MULTIPART_PART_SIZE=5 * MIB):
        issued = ask(
            client, ckan_world.editor.token, ckan_world.resource["id"], size=7 * MIB, multipart=True, filename="x.csv"
        )
    base = f"/api/v1/uploads/{issued['upload_id']}"
    attempts = [
        ("post", f"{base}/parts", {"part_numbers": [1]}),
        ("get", f"{base}/parts", None),
        ("post", f"{base}/complete", None),
        ("delete", base, None),
    ]
    for token in (colleague.token, ckan_world.outsider.token, ckan_world.viewer.token):
        for method, path, body in attempts:
            response = getattr(client, method)(
                path,
                data=json.dumps(body) if body else None,
                content_type="application/json",
                HTTP_AUTHORIZATION=token,
            )
            assert (response.status_code, response.json()["error"]["code"]) == (403, "not_owner"), (method, path)
        assert client.get(base, HTTP_AUTHORIZATION=token).status_code == 403
    assert client.get(base).json() == {"upload_id": issued["upload_id"], "state": "issued"}
    upload = Upload.objects.get(pk=issued["upload_id"])
    assert upload.state == UploadState.ISSUED
    [listed] = storage_world.s3.list_multipart_uploads(Bucket=storage_world.bucket)["Uploads"]
    assert listed["UploadId"] == upload.multipart_upload_id
    # The requester's own token does all of it.
    abort = client.delete(base, HTTP_AUTHORIZATION=ckan_world.editor.token)
    assert (abort.status_code, abort.json()["state"]) == (200, "aborted")
    assert not storage_world.s3.list_multipart_uploads(Bucket=storage_world.bucket).get("Uploads")
