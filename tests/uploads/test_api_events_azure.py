"""POST/OPTIONS /api/v1/events/azure: Event Grid's two handshakes, the shared key, malformed bodies."""

from __future__ import annotations

import json

import pytest
from django.test import override_settings

from tests.support.factories import make_upload as build_upload
from tests.uploads.samples.azure_event_grid import (
    CLOUD_EVENT_BLOB_CREATED,
    EVENT_GRID_BLOB_CREATED,
    EVENT_GRID_BLOB_DELETED,
    SUBSCRIPTION_VALIDATION,
)
from uploads.models import StorageEvent, Upload, UploadState

KEY = "azure-webhook-key-0123456789"
CONTAINER = "ckan-uploads"
URL = "/api/v1/events/azure"


@pytest.fixture(autouse=True)
def webhook_key():
    with override_settings(AZURE_EVENTS_WEBHOOK_KEY=KEY, EVENTS_WEBHOOK_MAX_BYTES=8192):
        yield


def blob_created(key: str, *, cloudevents: bool = False) -> list[dict]:
    [event] = json.loads(CLOUD_EVENT_BLOB_CREATED if cloudevents else EVENT_GRID_BLOB_CREATED)
    event["subject"] = f"/blobServices/default/containers/{CONTAINER}/blobs/{key}"
    event["data"]["contentLength"] = 3
    return [event]


def post(client, body, *, key: str | None = KEY, content_type="application/json", **extra):
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    path = URL if key is None else f"{URL}?key={key}"
    return client.post(path, data=raw, content_type=content_type, **extra)


@pytest.mark.django_db
def test_the_event_grid_validation_event_is_answered_with_its_code(client):
    response = post(client, json.loads(SUBSCRIPTION_VALIDATION))
    assert response.status_code == 200, response.content
    assert response.json() == {"validationResponse": "512d38b6-c7b8-40c8-89fe-f46f9e9622b6"}
    assert StorageEvent.objects.count() == 0


@pytest.mark.django_db
def test_the_cloudevents_options_handshake_allows_the_announced_origin(client):
    response = client.options(f"{URL}?key={KEY}", HTTP_WEBHOOK_REQUEST_ORIGIN="eventgrid.azure.net")
    assert response.status_code == 200, response.content
    assert response["WebHook-Allowed-Origin"] == "eventgrid.azure.net"


@pytest.mark.django_db
def test_the_options_handshake_needs_the_key_and_an_origin(client):
    refused = client.options(f"{URL}?key=wrong-key-0123456789", HTTP_WEBHOOK_REQUEST_ORIGIN="eventgrid.azure.net")
    assert refused.status_code == 401
    assert "WebHook-Allowed-Origin" not in refused
    no_origin = client.options(f"{URL}?key={KEY}")
    assert no_origin.status_code == 400
    assert no_origin.json()["error"]["code"] == "invalid"


@pytest.mark.django_db
@pytest.mark.parametrize("cloudevents", [False, True])
def test_a_blob_created_event_marks_the_upload_uploaded(
    client, enqueued, django_capture_on_commit_callbacks, cloudevents
):
    upload = build_upload(resource_id="r-1", filename="a b.csv", bucket=CONTAINER, state=UploadState.ISSUED)
    content_type = "application/cloudevents-batch+json; charset=utf-8" if cloudevents else "application/json"
    with django_capture_on_commit_callbacks(execute=True):
        response = post(client, blob_created(upload.key, cloudevents=cloudevents), content_type=content_type)
    assert response.status_code == 202, response.content
    assert response.json() == {"received": 1, "duplicates": 0, "unmatched": 0}
    [event] = StorageEvent.objects.all()
    assert (event.source, event.upload_id, event.bucket, event.key) == ("webhook", upload.id, CONTAINER, upload.key)
    assert Upload.objects.get(pk=upload.pk).state == UploadState.UPLOADED
    assert enqueued == [(str(upload.id), "event")]


@pytest.mark.django_db
def test_the_key_may_come_in_the_delivery_header(client, enqueued):
    response = post(client, blob_created("x/y.csv"), key=None, HTTP_X_WEBHOOK_KEY=KEY)
    assert response.status_code == 202, response.content
    assert response.json() == {"received": 1, "duplicates": 0, "unmatched": 1}


@pytest.mark.django_db
def test_a_redelivered_event_is_a_duplicate(client, enqueued):
    body = blob_created("x/y.csv")
    post(client, body)
    again = post(client, body)
    assert again.json() == {"received": 1, "duplicates": 1, "unmatched": 1}
    assert StorageEvent.objects.count() == 1


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("key", "header", "code"),
    [(None, None, "unauthenticated"), ("wrong-key-0123456789", None, "bad_key"), (None, "nope", "bad_key")],
)
def test_a_missing_or_bad_key_is_refused_and_nothing_is_recorded(client, key, header, code):
    extra = {"HTTP_X_WEBHOOK_KEY": header} if header else {}
    response = post(client, blob_created("x/y.csv"), key=key, **extra)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == code
    assert StorageEvent.objects.count() == 0
    handshake = post(client, json.loads(SUBSCRIPTION_VALIDATION), key=key, **extra)
    assert handshake.status_code == 401  # no subscription is validated without the key either


@pytest.mark.django_db
def test_without_a_configured_key_azure_events_are_refused(client):
    with override_settings(AZURE_EVENTS_WEBHOOK_KEY=""):
        response = post(client, blob_created("x/y.csv"))
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "not_configured"
    assert StorageEvent.objects.count() == 0


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("body", "content_type", "status", "code"),
    [
        (b"{not json", "application/json", 400, "unreadable"),
        (b"  ", "application/json", 400, "unreadable"),
        (b"[1, 2]", "application/json", 400, "unreadable"),
        (
            b'[{"eventType": "Microsoft.Storage.BlobCreated", "subject": "/x", "data": {}}]',
            "application/json",
            400,
            "unreadable",
        ),
        (
            b'[{"eventType": "Microsoft.EventGrid.SubscriptionValidationEvent", "data": {}}]',
            "application/json",
            400,
            "unreadable",
        ),
        (b"[]", "text/plain", 415, "unsupported_media_type"),
        (b"[" + b" " * 9000 + b"]", "application/json", 413, "too_large"),
    ],
)
def test_malformed_bodies_are_4xx_json_and_record_nothing(client, body, content_type, status, code):
    response = post(client, body, content_type=content_type)
    assert response.status_code == status, response.content
    assert response.json()["error"]["code"] == code
    assert StorageEvent.objects.count() == 0


@pytest.mark.django_db
def test_one_bad_event_in_a_batch_records_none_of_it(client):
    good = blob_created("x/good.csv")
    bad = blob_created("x/bad.csv")
    bad[0]["data"]["contentLength"] = "big"
    response = post(client, good + bad)
    assert response.status_code == 400
    assert "contentLength" in response.json()["error"]["message"]
    assert StorageEvent.objects.count() == 0


@pytest.mark.django_db
def test_a_blob_deleted_event_flags_the_upload(client, enqueued):
    upload = build_upload(resource_id="r-1", filename="gone.csv", bucket=CONTAINER, state=UploadState.LINKED)
    [event] = json.loads(EVENT_GRID_BLOB_DELETED)
    event["subject"] = f"/blobServices/default/containers/{CONTAINER}/blobs/{upload.key}"
    response = post(client, [event])
    assert response.status_code == 202, response.content
    assert response.json() == {"received": 1, "duplicates": 0, "unmatched": 0}
    stored = StorageEvent.objects.get()
    assert (stored.action, stored.upload_id, stored.size) == ("deleted", upload.id, None)
    assert Upload.objects.get(pk=upload.pk).object_deleted_at is not None
    assert enqueued == []
