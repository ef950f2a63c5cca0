from __future__ import annotations

import json
import uuid
from urllib.parse import parse_qs, urlparse

import pytest
import requests
import responses
from django.test import override_settings

from uploads.models import Upload, UploadState

CKAN = "http://ckan.example.test"
RESOURCE_ID = "3f1b0c8e-2a4d-4c6e-9b1a-0123456789ab"
PACKAGE_ID = "9d2c1b0a-1111-4222-8333-444455556666"


def ckan_action(name: str) -> str:
    return f"{CKAN}/api/3/action/{name}"


def package_result(*, private: bool) -> dict:
    return {"success": True, "result": {"id": PACKAGE_ID, "private": private, "state": "active", "resources": []}}


@pytest.fixture
def fake_ckan():
    """CKAN as seen by an editor of RESOURCE_ID (unit tests only: integration uses a real CKAN)."""
    with (
        override_settings(CKAN_URL=CKAN, CKAN_API_TOKEN="service-token-xyz"),
        responses.RequestsMock(assert_all_requests_are_fired=False) as mock,
    ):
        mock.post(
            ckan_action("resource_patch"),
            json={"success": True, "result": {"id": RESOURCE_ID, "package_id": PACKAGE_ID}},
        )
        mock.post(ckan_action("user_show"), json={"success": True, "result": {"name": "alice", "id": "u-1"}})
        mock.post(ckan_action("package_show"), json=package_result(private=False))
        mock.add_passthru("http://127.0.0.1")
        yield mock


def post_upload(client, body: dict, token: str | None = "client-token-abc"):
    headers = {"HTTP_AUTHORIZATION": token} if token else {}
    return client.post("/api/v1/uploads", data=json.dumps(body), content_type="application/json", **headers)


@pytest.mark.django_db
def test_it_issues_a_url_that_really_accepts_the_put(client, storage_world, fake_ckan):
    response = post_upload(
        client, {"resource_id": RESOURCE_ID, "filename": "data 2024.csv", "content_type": "text/csv", "size": 8}
    )
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["method"] == "PUT"
    assert body["headers"] == {"Content-Type": "text/csv", "Content-Length": "8"}
    assert body["key"] == f"resources/api_uploads/{RESOURCE_ID}/{body['upload_id']}/data_2024.csv"
    assert body["status_url"].endswith(f"/api/v1/uploads/{body['upload_id']}")

    put = requests.put(body["upload_url"], data=b"a,b\n1,2\n", headers=body["headers"], timeout=10)
    assert put.status_code == 200
    head = storage_world.s3.head_object(Bucket=storage_world.bucket, Key=body["key"])
    assert head["ContentLength"] == 8
    assert head["ContentType"] == "text/csv"

    upload = Upload.objects.get(pk=body["upload_id"])
    assert upload.state == UploadState.ISSUED
    assert upload.package_id == PACKAGE_ID
    assert upload.requested_by == "alice"
    assert upload.declared_size == 8


@pytest.mark.django_db
def test_the_url_signs_the_headers_it_returns_and_expires_with_the_ttl(client, storage_world, fake_ckan):
    with override_settings(UPLOAD_URL_TTL=900):
        response = post_upload(
            client,
            {
                "resource_id": RESOURCE_ID,
                "filename": "a.csv",
                "content_type": "text/csv",
                "size": 3,
                "sha256": "ab" * 32,
            },
        )
    body = response.json()
    query = parse_qs(urlparse(body["upload_url"]).query)
    assert query["X-Amz-Expires"] == ["900"]
    signed = set(query["X-Amz-SignedHeaders"][0].split(";"))
    assert {"content-type", "content-length", "x-amz-checksum-sha256", "host"} <= signed
    upload = Upload.objects.get(pk=body["upload_id"])
    assert (upload.expires_at - upload.issued_at).total_seconds() == 900


@pytest.mark.django_db
def test_the_url_does_not_bind_a_length_when_no_size_is_declared(client, storage_world, fake_ckan):
    body = post_upload(client, {"resource_id": RESOURCE_ID, "filename": "a.csv", "content_type": "text/csv"}).json()
    signed = parse_qs(urlparse(body["upload_url"]).query)["X-Amz-SignedHeaders"][0].split(";")
    assert "content-length" not in signed
    assert "content-type" in signed


@pytest.mark.django_db
def test_it_answers_401_without_a_token_and_records_nothing(client, storage_world, fake_ckan):
    response = post_upload(
        client, {"resource_id": RESOURCE_ID, "filename": "a.csv", "content_type": "text/csv"}, token=None
    )
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "unauthenticated"
    assert Upload.objects.count() == 0


@pytest.mark.parametrize(
    ("status", "body", "expected_status", "expected_code"),
    [
        (
            403,
            {"success": False, "error": {"__type": "Authorization Error", "message": "Access denied"}},
            403,
            "forbidden",
        ),
        (404, {"success": False, "error": {"__type": "Not Found Error", "message": "Not found"}}, 404, "not_found"),
        (
            500,
            {"success": False, "error": {"__type": "Search Index Error", "message": "down"}},
            502,
            "ckan_unavailable",
        ),
    ],
)
@pytest.mark.django_db
def test_it_maps_ckan_refusals_to_clear_errors(
    client, storage_world, fake_ckan, status, body, expected_status, expected_code
):
    fake_ckan.replace(responses.POST, ckan_action("resource_patch"), json=body, status=status)
    response = post_upload(client, {"resource_id": RESOURCE_ID, "filename": "a.csv", "content_type": "text/csv"})
    assert response.status_code == expected_status
    assert response.json()["error"]["code"] == expected_code
    assert Upload.objects.count() == 0


@pytest.mark.django_db
def test_it_answers_502_when_ckan_is_unreachable(client, storage_world):
    with override_settings(CKAN_URL="http://127.0.0.1:9", CKAN_TIMEOUT_SECONDS=2):
        response = post_upload(client, {"resource_id": RESOURCE_ID, "filename": "a.csv", "content_type": "text/csv"})
    assert response.status_code == 502
    assert response.json()["error"]["code"] == "ckan_unavailable"


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"resource_id": "not-a-uuid"}, "resource_id"),
        ({"filename": "../etc/passwd"}, "filename"),
        ({"filename": "a\x00b.csv"}, "filename"),
        ({"filename": "dir\\file.csv"}, "filename"),
        ({"filename": ""}, "filename"),
        ({"filename": "é" * 600}, "filename"),
        ({"content_type": "not a type"}, "content_type"),
        ({"size": 0}, "size"),
        ({"size": 5 * 1024**4 + 1}, "size"),
        ({"size": 5 * 1024**3 + 1, "multipart": False}, "size"),
        ({"multipart": True}, "size"),
        ({"sha256": "xyz"}, "sha256"),
    ],
)
@pytest.mark.django_db
def test_it_refuses_bad_input_with_a_400_naming_the_field(client, storage_world, fake_ckan, change, field):
    body = {"resource_id": RESOURCE_ID, "filename": "a.csv", "content_type": "text/csv", **change}
    response = post_upload(client, body)
    assert response.status_code == 400, response.content
    assert field in response.json()["error"]["fields"]
    assert Upload.objects.count() == 0


@pytest.mark.django_db
def test_it_refuses_a_body_that_is_not_json(client, storage_world, fake_ckan):
    response = client.post(
        "/api/v1/uploads", data="{not json", content_type="application/json", HTTP_AUTHORIZATION="tok"
    )
    assert response.status_code == 400
    assert "error" in response.json()


@pytest.mark.django_db
def test_it_shows_an_upload_status(client, storage_world, fake_ckan):
    body = post_upload(client, {"resource_id": RESOURCE_ID, "filename": "a.csv", "content_type": "text/csv"}).json()
    status = client.get(f"/api/v1/uploads/{body['upload_id']}", HTTP_AUTHORIZATION="client-token-abc")
    assert status.status_code == 200
    assert status.json()["state"] == "issued"
    assert status.json()["resource_id"] == RESOURCE_ID
    assert client.get(f"/api/v1/uploads/{uuid.uuid4()}").status_code == 404


@pytest.mark.django_db
def test_it_answers_503_when_storage_is_not_configured(client, fake_ckan):
    with override_settings(STORAGE_BUCKET="", STORAGE_ACCESS_KEY_ID="", STORAGE_SECRET_ACCESS_KEY=""):
        response = post_upload(client, {"resource_id": RESOURCE_ID, "filename": "a.csv", "content_type": "text/csv"})
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "storage_not_configured"


@pytest.mark.django_db
def test_it_serves_an_openapi_schema(client):
    schema = client.get("/api/v1/openapi.json").json()
    assert "/api/v1/uploads" in schema["paths"]
    assert "/api/v1/resources" in schema["paths"]


@pytest.mark.django_db
def test_it_refuses_a_private_datasets_file_with_a_409_naming_the_setting(client, storage_world, fake_ckan):
    fake_ckan.replace(responses.POST, ckan_action("package_show"), json=package_result(private=True))
    response = post_upload(client, {"resource_id": RESOURCE_ID, "filename": "a.csv", "content_type": "text/csv"})
    assert response.status_code == 409, response.content
    error = response.json()["error"]
    assert error["code"] == "private_dataset"
    assert "PRIVATE_DATASET_UPLOADS=public" in error["message"]
    assert Upload.objects.count() == 0


@pytest.mark.django_db
def test_with_the_opt_in_a_private_datasets_file_is_issued_and_recorded_as_private(client, storage_world, fake_ckan):
    fake_ckan.replace(responses.POST, ckan_action("package_show"), json=package_result(private=True))
    with override_settings(PRIVATE_DATASET_UPLOADS="public"):
        response = post_upload(client, {"resource_id": RESOURCE_ID, "filename": "a.csv", "content_type": "text/csv"})
    assert response.status_code == 201, response.content
    assert Upload.objects.get(pk=response.json()["upload_id"]).dataset_private is True


@pytest.mark.django_db
def test_the_resources_endpoint_refuses_a_private_dataset_before_creating_anything(client, storage_world, fake_ckan):
    fake_ckan.replace(responses.POST, ckan_action("package_show"), json=package_result(private=True))
    create = fake_ckan.post(ckan_action("resource_create"), json={"success": True, "result": {"id": RESOURCE_ID}})
    body = {"package_id": PACKAGE_ID, "name": "New", "filename": "a.csv", "content_type": "text/csv"}
    response = client.post(
        "/api/v1/resources", data=json.dumps(body), content_type="application/json", HTTP_AUTHORIZATION="tok"
    )
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "private_dataset"
    assert create.call_count == 0
    assert Upload.objects.count() == 0


@pytest.mark.django_db
def test_with_object_acls_a_public_datasets_put_is_signed_public_read(client, storage_world, fake_ckan):
    with override_settings(STORAGE_OBJECT_ACLS=True):
        body = post_upload(
            client, {"resource_id": RESOURCE_ID, "filename": "a.csv", "content_type": "text/csv", "size": 3}
        ).json()
    assert body["headers"]["x-amz-acl"] == "public-read"
    assert "x-amz-acl" in parse_qs(urlparse(body["upload_url"]).query)["X-Amz-SignedHeaders"][0].split(";")
    assert requests.put(body["upload_url"], data=b"a,b", headers=body["headers"], timeout=10).status_code == 200
    assert requests.get(f"{storage_world.endpoint}/{storage_world.bucket}/{body['key']}", timeout=10).content == b"a,b"


@pytest.mark.django_db
def test_without_object_acls_no_acl_is_signed(client, storage_world, fake_ckan):
    body = post_upload(client, {"resource_id": RESOURCE_ID, "filename": "a.csv", "content_type": "text/csv"}).json()
    assert "x-amz-acl" not in body["headers"]
    assert Upload.objects.get(pk=body["upload_id"]).dataset_private is False
