"""Every refusal under /api/ answers the JSON error shape; the admin keeps Django's pages."""

from __future__ import annotations

import json
import time

import pytest
from django.test import override_settings

from uploads.api_events import signature_for
from uploads.models import StorageEvent, Upload

RESOURCE_ID = "3f1b0c8e-2a4d-4c6e-9b1a-0123456789ab"
SECRET = "webhook-secret-0123456789"


def error_of(response) -> dict:
    assert response["Content-Type"].startswith("application/json"), response.content[:200]
    return response.json()["error"]


@pytest.mark.django_db
def test_a_body_over_the_limit_is_refused_with_413_and_the_limit(client):
    with override_settings(DATA_UPLOAD_MAX_MEMORY_SIZE=10_000):
        response = client.post(
            "/api/v1/uploads", data="x" * 10_001, content_type="application/json", HTTP_AUTHORIZATION="tok"
        )
    assert response.status_code == 413
    error = error_of(response)
    assert error["code"] == "too_large"
    assert error["limit"] == 10_000
    assert Upload.objects.count() == 0


def test_a_bad_host_is_refused_with_a_json_400_under_the_api(client):
    response = client.get(f"/api/v1/uploads/{RESOURCE_ID}", HTTP_HOST="evil.example")
    assert response.status_code == 400
    assert error_of(response)["code"] == "bad_host"


def test_a_bad_host_on_the_admin_keeps_djangos_html_page(client):
    response = client.get("/admin/login/", HTTP_HOST="evil.example")
    assert response.status_code == 400
    assert response["Content-Type"].startswith("text/html")


@pytest.mark.django_db
def test_a_json_body_declared_as_text_is_refused_with_415_not_parsed(client):
    body = {"resource_id": RESOURCE_ID, "filename": "a.csv", "content_type": "text/csv"}
    response = client.post(
        "/api/v1/uploads", data=json.dumps(body), content_type="text/plain", HTTP_AUTHORIZATION="tok"
    )
    assert response.status_code == 415
    assert error_of(response)["code"] == "unsupported_media_type"
    assert Upload.objects.count() == 0


@pytest.mark.django_db
def test_a_webhook_body_declared_as_a_form_is_refused_with_415(client):
    raw = json.dumps({"Records": []}).encode()
    timestamp = str(int(time.time()))
    with override_settings(EVENTS_WEBHOOK_SECRET=SECRET):
        response = client.post(
            "/api/v1/events/s3",
            data=raw,
            content_type="application/x-www-form-urlencoded",
            HTTP_X_SIGNATURE_TIMESTAMP=timestamp,
            HTTP_X_SIGNATURE=signature_for(SECRET, timestamp, raw),
        )
    assert response.status_code == 415
    assert error_of(response)["code"] == "unsupported_media_type"
    assert StorageEvent.objects.count() == 0


def test_a_wrong_method_is_refused_with_a_json_405_and_the_allowed_ones(client):
    response = client.delete("/api/v1/uploads")
    assert response.status_code == 405
    assert error_of(response)["code"] == "method_not_allowed"
    assert response["Allow"] == "POST"


def test_an_unknown_route_is_a_json_404(client):
    response = client.get("/api/v1/no-such-thing")
    assert response.status_code == 404
    assert error_of(response)["code"] == "not_found"


@pytest.mark.django_db
def test_a_path_id_that_is_not_a_uuid_is_a_400_naming_it(client):
    response = client.get("/api/v1/uploads/not-a-uuid")
    assert response.status_code == 400
    error = error_of(response)
    assert error["code"] == "invalid"
    assert list(error["fields"]) == ["upload_id"]


def test_the_admin_keeps_its_html_404(client):
    response = client.get("/admin/no-such-page/")
    assert response["Content-Type"].startswith("text/html")
