from __future__ import annotations

import json
import time

import pytest
from django.test import override_settings

from tests.support.factories import make_upload as build_upload
from uploads.api_events import signature_for
from uploads.models import StorageEvent, Upload, UploadState

SECRET = "webhook-secret-0123456789"
BUCKET = "ckan-uploads"
RESOURCE_ID = "3f1b0c8e-2a4d-4c6e-9b1a-0123456789ab"


@pytest.fixture(autouse=True)
def webhook_secret():
    with override_settings(EVENTS_WEBHOOK_SECRET=SECRET, EVENTS_WEBHOOK_MAX_BYTES=4096):
        yield


def make_upload(state: str = UploadState.ISSUED) -> Upload:
    return build_upload(resource_id=RESOURCE_ID, filename="a b.csv", bucket=BUCKET, state=state)


def r2(key: str, etag: str = "abc") -> dict:
    return {
        "action": "PutObject",
        "bucket": BUCKET,
        "object": {"key": key, "size": 3, "eTag": etag},
        "eventTime": "2026-01-02T03:04:05Z",
    }


def post(client, path: str, body: bytes | dict | list, *, secret=SECRET, timestamp=None, signature=None, **extra):
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    ts = str(int(time.time()) if timestamp is None else timestamp)
    headers = {"HTTP_X_SIGNATURE_TIMESTAMP": ts, "HTTP_X_SIGNATURE": signature or signature_for(secret, ts, raw)}
    headers.update(extra)
    return client.post(f"/api/v1/events/{path}", data=raw, content_type="application/json", **headers)


@pytest.mark.django_db
def test_it_accepts_a_signed_r2_batch_and_records_each_event(client, enqueued, django_capture_on_commit_callbacks):
    upload = make_upload()
    batch = {"messages": [{"id": "1", "body": r2(upload.key)}, {"id": "2", "body": r2("not/ours.csv")}]}
    with django_capture_on_commit_callbacks(execute=True):
        response = post(client, "r2", batch)
    assert response.status_code == 202, response.content
    assert response.json() == {"received": 2, "duplicates": 0, "unmatched": 1}
    assert StorageEvent.objects.filter(source="webhook").count() == 2
    upload.refresh_from_db()
    assert upload.state == UploadState.UPLOADED
    assert enqueued == [(str(upload.id), "event")]


@pytest.mark.django_db
def test_each_event_pushed_three_times_is_one_row_with_three_deliveries(client, enqueued):
    upload = make_upload()
    answers = [post(client, "r2", r2(upload.key)).json() for _ in range(3)]
    assert answers[0] == {"received": 1, "duplicates": 0, "unmatched": 0}
    assert answers[2] == {"received": 1, "duplicates": 1, "unmatched": 0}
    assert StorageEvent.objects.get().deliveries == 3


@pytest.mark.django_db
def test_it_accepts_s3_records_and_skips_the_test_event(client, enqueued):
    upload = make_upload()
    record = {
        "eventName": "ObjectCreated:Put",
        "eventTime": "2026-01-02T03:04:05Z",
        "s3": {"bucket": {"name": BUCKET}, "object": {"key": upload.key.replace("/", "%2F"), "size": 3, "eTag": "e"}},
    }
    assert post(client, "s3", {"Records": [record]}).json() == {"received": 1, "duplicates": 0, "unmatched": 0}
    assert StorageEvent.objects.get().upload == upload
    test_event = {"Service": "Amazon S3", "Event": "s3:TestEvent", "Time": "t", "Bucket": BUCKET}
    response = post(client, "s3", test_event)
    assert (response.status_code, response.json()["received"]) == (202, 0)


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("kwargs", "code"),
    [
        ({"signature": "sha256=" + "0" * 64}, "bad_signature"),
        ({"secret": "another-secret-entirely"}, "bad_signature"),
        ({"signature": "md5=abc"}, "bad_signature"),
        ({"signature": "sha256=ü"}, "bad_signature"),
        ({"timestamp": int(time.time()) - 400}, "stale"),
        ({"timestamp": int(time.time()) + 400}, "stale"),
        ({"timestamp": "12.5"}, "bad_timestamp"),
        ({"timestamp": "9" * 40}, "bad_timestamp"),
    ],
)
def test_bad_signatures_and_stale_timestamps_are_401_and_nothing_is_recorded(client, kwargs, code):
    upload = make_upload()
    response = post(client, "r2", r2(upload.key), **kwargs)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == code
    assert not StorageEvent.objects.exists()


@pytest.mark.django_db
def test_a_signature_within_the_window_is_accepted(client, enqueued):
    response = post(client, "r2", r2("k"), timestamp=int(time.time()) - 250)
    assert response.status_code == 202


@pytest.mark.django_db
def test_a_body_changed_after_signing_is_401(client):
    upload = make_upload()
    ts = str(int(time.time()))
    signed = json.dumps(r2(upload.key)).encode()
    response = client.post(
        "/api/v1/events/r2",
        data=json.dumps(r2(upload.key, etag="tampered")),
        content_type="application/json",
        HTTP_X_SIGNATURE_TIMESTAMP=ts,
        HTTP_X_SIGNATURE=signature_for(SECRET, ts, signed),
    )
    assert response.status_code == 401
    assert not StorageEvent.objects.exists()


@pytest.mark.django_db
def test_missing_signature_headers_are_401(client):
    response = client.post("/api/v1/events/s3", data=b"{}", content_type="application/json")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "unsigned"


@pytest.mark.django_db
def test_without_a_secret_every_push_is_refused_with_503(client):
    with override_settings(EVENTS_WEBHOOK_SECRET=""):
        response = post(client, "r2", r2("k"), secret="")
    assert response.status_code == 503
    assert "EVENTS_WEBHOOK_SECRET" in response.json()["error"]["message"]
    assert not StorageEvent.objects.exists()


@pytest.mark.django_db
def test_an_oversized_body_is_413_even_when_signed(client):
    big = [r2(f"key-{i}") for i in range(100)]
    response = post(client, "r2", big)
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "too_large"
    assert not StorageEvent.objects.exists()


@pytest.mark.django_db
def test_a_body_that_lies_about_its_content_length_is_refused(client):
    raw = json.dumps([r2(f"key-{i}") for i in range(100)]).encode()
    response = post(client, "r2", raw, CONTENT_LENGTH="10")
    assert response.status_code in (400, 401, 413)
    assert not StorageEvent.objects.exists()


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("path", "raw", "message"),
    [
        ("r2", b"not json at all", "not JSON"),
        ("r2", b"\xff\xfe", "not UTF-8"),
        ("r2", b'{"action": "GetObject", "bucket": "b", "object": {"key": "k"}}', "GetObject"),
        ("s3", b'{"Records": [{"eventName": "ObjectCreated:Put"}]}', "s3 must be a JSON object"),
        ("s3", b"[]", "must be a JSON object"),
    ],
)
def test_signed_but_malformed_bodies_are_400_and_nothing_is_recorded(client, path, raw, message):
    response = post(client, path, raw)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "unreadable"
    assert message in response.json()["error"]["message"]
    assert not StorageEvent.objects.exists()
