"""Azure end to end: SAS URL → PUT to Azurite → Event Grid event (webhook, Storage Queue) → a real
qcluster → the real local CKAN; a blob whose event was lost is found and linked by reconcile --fix."""

from __future__ import annotations

import base64
import io
import json
from datetime import UTC, datetime

import pytest
import requests
from django.core.management import call_command
from django.test import override_settings

from tests.support.pipeline import qcluster, run_command, wait_for_state
from tests.support.processes import child_environ
from tests.uploads.samples.azure_event_grid import CLOUD_EVENT_BLOB_CREATED, EVENT_GRID_BLOB_CREATED
from uploads import storage
from uploads.models import Discrepancy, DiscrepancyKind, EventSource, LinkAttempt, StorageEvent, UploadState

pytestmark = [pytest.mark.integration, pytest.mark.ckan, pytest.mark.django_db(transaction=True)]

CSV = b"station,temp\nA,12.5\nB,13.0\n"
WEBHOOK_KEY = "e2e-azure-webhook-key-0123"
MIB = 1024**2


def environ(azure_world, ckan_site) -> dict[str, str]:
    """qcluster and consumers: the test DB, Azurite, the local CKAN, fast retries."""
    return child_environ(
        **azure_world.environ(),
        CKAN_URL=ckan_site.url,
        CKAN_API_TOKEN=ckan_site.sysadmin_token,
        LINK_RETRY_BASE_SECONDS="1",
        LINK_RETRY_MAX_SECONDS="2",
        LINK_MAX_ATTEMPTS="8",
        CKAN_TIMEOUT_SECONDS="5",
    )


def ask(client, ckan_world, *, filename: str, size: int, multipart: bool | None = None) -> dict:
    body = {"resource_id": ckan_world.resource["id"], "filename": filename, "content_type": "text/csv", "size": size}
    if multipart is not None:
        body["multipart"] = multipart
    response = client.post(
        "/api/v1/uploads",
        data=json.dumps(body),
        content_type="application/json",
        HTTP_AUTHORIZATION=ckan_world.editor.token,
    )
    assert response.status_code == 201, response.content
    return response.json()


def upload_as_editor(client, ckan_world, *, filename: str, data: bytes = CSV) -> dict:
    """Issue a SAS URL through the API and PUT the file with plain requests, as a client would."""
    issued = ask(client, ckan_world, filename=filename, size=len(data))
    assert issued["headers"]["x-ms-blob-type"] == "BlockBlob"
    response = requests.put(issued["upload_url"], data=data, headers=issued["headers"], timeout=30)
    assert response.status_code == 201, response.text
    return issued


def blob_created(azure_world, key: str, *, cloudevents: bool = False) -> dict:
    """The BlobCreated event Event Grid would send for the blob now in Azurite."""
    props = azure_world.container_client().get_blob_client(key).get_blob_properties()
    [event] = json.loads(CLOUD_EVENT_BLOB_CREATED if cloudevents else EVENT_GRID_BLOB_CREATED)
    event["subject"] = f"/blobServices/default/containers/{azure_world.container}/blobs/{key}"
    event["time" if cloudevents else "eventTime"] = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    event["data"].update(api="PutBlob", eTag=props.etag, contentLength=props.size, contentType="text/csv")
    return event


def assert_ckan_shows(ckan_world, upload_id: str, size: int) -> None:
    upload = wait_for_state(upload_id, UploadState.LINKED)
    resource = ckan_world.site.resource_show(ckan_world.resource["id"])
    assert resource["url"] == storage.public_url(upload.key) == upload.linked_url
    assert resource["url"].startswith(storage.public_url(""))
    assert int(resource["size"]) == size
    assert resource["format"] == "CSV"
    assert resource["mimetype"] == "text/csv"
    assert not resource.get("hash")  # an Azure ETag is no checksum, and Azure keeps no SHA-256
    assert resource["description"] == "Original description, must survive patches"


@pytest.mark.parametrize("cloudevents", [False, True])
def test_a_blob_created_event_pushed_by_event_grid_is_linked(
    client, azure_world, ckan_world, ckan_settings, tmp_path, cloudevents
):
    issued = upload_as_editor(client, ckan_world, filename="azure push.csv")
    assert issued["upload_url"].startswith(azure_world.azurite.blob_endpoint)
    body = [blob_created(azure_world, issued["key"], cloudevents=cloudevents)]
    with (
        qcluster(environ(azure_world, ckan_settings), tmp_path / "qcluster.log"),
        override_settings(AZURE_EVENTS_WEBHOOK_KEY=WEBHOOK_KEY),
    ):
        response = client.post(
            f"/api/v1/events/azure?key={WEBHOOK_KEY}",
            data=json.dumps(body),
            content_type="application/cloudevents-batch+json" if cloudevents else "application/json",
        )
        assert response.status_code == 202, response.content
        assert response.json() == {"received": 1, "duplicates": 0, "unmatched": 0}
        assert_ckan_shows(ckan_world, issued["upload_id"], len(CSV))

    event = StorageEvent.objects.get(key=issued["key"])
    assert (event.source, event.bucket) == (EventSource.WEBHOOK, azure_world.container)
    attempts = list(
        LinkAttempt.objects.filter(upload_id=issued["upload_id"]).values_list("trigger", "outcome", "error")
    )
    assert attempts[0][0] == "event", attempts
    assert [a[1] for a in attempts].count("linked") == 1, attempts


def test_a_blob_created_event_through_the_storage_queue_is_linked(
    client, azure_world, ckan_world, ckan_settings, tmp_path
):
    issued = upload_as_editor(client, ckan_world, filename="azure queue.csv")
    message = json.dumps(blob_created(azure_world, issued["key"])).encode()
    azure_world.queue_client().send_message(base64.b64encode(message).decode("ascii"))  # as Event Grid writes it
    env = environ(azure_world, ckan_settings)

    output = run_command("consume_azure_queue", "--once", "--idle-seconds", "0.1", env=env)
    assert "events=1" in output and "failed=0" in output
    assert not list(azure_world.queue_client().peek_messages())
    with qcluster(env, tmp_path / "qcluster.log"):
        assert_ckan_shows(ckan_world, issued["upload_id"], len(CSV))

    event = StorageEvent.objects.get(key=issued["key"])
    assert event.source == EventSource.AZURE_QUEUE


def test_a_large_file_in_blocks_is_completed_server_side_and_linked(
    client, azure_world, ckan_world, ckan_settings, tmp_path
):
    line = b"station,temp\nA,12.5\n"
    data = (line * (11 * MIB // len(line) + 1))[: 11 * MIB + 7]
    with override_settings(MULTIPART_PART_SIZE=5 * MIB):
        issued = ask(client, ckan_world, filename="big.csv", size=len(data), multipart=True)
    assert (issued["part_size"], issued["part_count"]) == (5 * MIB, 3)
    for part in reversed(issued["parts"]):
        start = (part["part_number"] - 1) * issued["part_size"]
        put = requests.put(
            part["url"], data=data[start : start + issued["part_size"]], headers=part["headers"], timeout=60
        )
        assert put.status_code == 201, put.text
    listed = client.get(issued["parts_url"], HTTP_AUTHORIZATION=ckan_world.editor.token)
    assert listed.status_code == 200, listed.content
    assert [p["part_number"] for p in listed.json()["parts"]] == [1, 2, 3]

    with qcluster(environ(azure_world, ckan_settings), tmp_path / "qcluster.log"):
        done = client.post(issued["complete_url"], HTTP_AUTHORIZATION=ckan_world.editor.token)
        assert done.status_code == 202, done.content
        assert_ckan_shows(ckan_world, issued["upload_id"], len(data))
    assert azure_world.container_client().download_blob(issued["key"]).readall() == data


def test_reconcile_fix_links_a_blob_whose_event_was_thrown_away(
    client, azure_world, ckan_world, ckan_settings, tmp_path
):
    issued = upload_as_editor(client, ckan_world, filename="lost event.csv")  # no event is ever delivered
    with qcluster(environ(azure_world, ckan_settings), tmp_path / "qcluster.log"):
        out = io.StringIO()
        call_command("reconcile", stdout=out)
        finding = Discrepancy.objects.get(key=issued["key"])
        assert finding.kind == DiscrepancyKind.UNEVENTED
        call_command("reconcile", "--fix", stdout=out)
        assert_ckan_shows(ckan_world, issued["upload_id"], len(CSV))
